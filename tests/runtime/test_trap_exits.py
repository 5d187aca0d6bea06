"""Faults whose value leaves the computation other than through an nn loss and an optimizer step:
read back to the host, left in .grad by a backward() with no optimizer, refused by a loss, made by
hand-written code on raw tensors, in one micro-batch of an accumulation, in a custom backward, or in
an evaluation loop. Each fixture is a script of that shape, run in-process under `stabcheck.trap()`
(no interpreter start per case), in default and per-op modes."""

from __future__ import annotations

import io
import runpy
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from runtime_helpers import FIXTURES, line_of, stabcheck_run, tensors_held
from script_runs import base_env

torch = pytest.importorskip("torch")

import stabcheck  # noqa: E402
from stabcheck.runtime import NonFiniteError  # noqa: E402
from stabcheck.runtime.divergence import diagnose  # noqa: E402
from stabcheck.runtime.divergence import hint as divergence_hint  # noqa: E402
from stabcheck.runtime.report import TrapReport, render  # noqa: E402

# fixture -> expected report fields (the location is the `# FAULT` line of the fixture)
FAULTS = {
    "manual_sgd_sqrt.py": dict(op="aten.div.Tensor", phase="backward", kind="-inf", rule="STB202", at="gradient",
                               step=2, mode="training", forward="sqrt", function="<module>"),
    "printed_direction.py": dict(op="aten.div.Tensor", phase="forward", kind="nan", rule="STB201", at="read",
                                 step=0, mode=None, function="direction"),
    "grad_accumulation_penalty.py": dict(op="aten.div.Tensor", phase="backward", kind="-inf", rule="STB202",
                                         at="optimizer", step=1, mode="training", forward="sqrt"),
    "custom_backward.py": dict(op="aten.div.Tensor", phase="backward", kind="-inf", rule="STB201", at="optimizer",
                               step=1, mode="training", function="backward"),
    "bce_minmax.py": dict(op="aten.div.Tensor", phase="forward", kind="nan", rule="STB201", at="loss", step=1,
                          mode="training"),
    "eval_relative_error.py": dict(op="aten.div.Tensor", phase="forward", kind="+inf", rule="STB201", at="read",
                                   step=3, mode="evaluation"),
    "kept_direction.py": dict(op="aten.div.Tensor", phase="forward", kind="nan", rule="STB201", at="exit",
                              step=0, mode=None, function="direction"),
    "sqrt_exp_std.py": dict(op="aten.exp.default", phase="forward", kind="+inf", rule="STB006", at="backward", step=2,
                            mode="training"),
    "supcon_no_positive.py": dict(op="aten.logsumexp.default", phase="forward", kind="-inf", rule=None,
                                  at="backward", step=3, mode="training", function="supcon_loss"),
    "fp16_cast_overflow.py": dict(op="aten._to_copy.default", phase="forward", kind="+inf", rule=None,
                                  at="backward", step=2, mode="training", hint="float16"),
    # the loop's own code between two steps (a batch standardised by a helper) is part of the next step
    "batch_zscore_in_loop.py": dict(op="aten.std.correction", phase="forward", kind="nan", rule=None, at="loss",
                                    step=4, mode="training", function="standardise", hint="single element"),
    "sft_all_labels_ignored.py": dict(op="aten.nll_loss_forward.default", phase="forward", kind="nan", rule=None,
                                      at="loss", step=3, mode="training", hint="ignore_index"),
    # a module returning a torch.distributions object: its tensors are the replay's, not outside input
    "policy_distribution_std.py": dict(op="aten.exp.default", phase="forward", kind="+inf", rule="STB005",
                                       at="backward", step=3, mode="training", function="forward"),
    # NaN since the init, hidden by a mask until a padded batch: the init's line, not "a previous update"
    "unit_norm_embedding_init.py": dict(op=None, phase="parameter", kind="nan", rule=None, at="loss", step=4,
                                        mode="training", function="__init__", hint="before any update"),
}
MODES = {"default": False, "per-op": True}


def _run(name: str, per_op: bool):
    """The report of the fixture run under the trap (None if it stayed silent) and the trap's incidents."""
    try:
        with stabcheck.trap(quiet=True, per_op=per_op) as trap:
            namespace = runpy.run_path(str(FIXTURES / name), run_name="__main__")  # noqa: F841 (kept to the end)
    except NonFiniteError as exc:
        return exc.report.to_dict(), 1
    return None, trap.incidents


@pytest.fixture(scope="module")
def reports():
    return {(name, mode): _run(name, per_op)[0] for name in FAULTS for mode, per_op in MODES.items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", FAULTS)
def test_fault_is_localized(reports, name, mode):
    want = FAULTS[name]
    report = reports[(name, mode)]
    assert report is not None, f"{name} ran to the end unreported"
    path = FIXTURES / name
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == (
        want["op"], want["phase"], want["kind"], want["rule"])
    assert report["location"]["filename"] == str(path)
    assert report["location"]["line"] == line_of(path, "# FAULT")
    assert report["step"] == want["step"] and report["mode"] == want["mode"]
    assert report["localized"] == "replay"
    if mode == "default":  # per-op flags may see the value first; the producer is the same
        assert report["detected"]["at"] == want["at"]
    if "forward" in want:
        assert report["forward"]["op"] == want["forward"]
    if "function" in want:
        assert report["location"]["function"] == want["function"]
    assert report["hint"] and want.get("hint", "") in report["hint"]


def test_messages_name_what_the_user_wrote(reports):
    assert reports[("manual_sgd_sqrt.py", "default")]["detected"]["message"] == \
        "the gradient of w is nan after backward()"
    assert reports[("custom_backward.py", "default")]["detected"]["message"].startswith("the gradient of scale is")
    assert "refused its input (all elements of input should be between 0 and 1)" in \
        reports[("bce_minmax.py", "default")]["detected"]["message"]
    assert reports[("printed_direction.py", "default")]["detected"]["message"] == "a tensor printed holds nan"


@pytest.mark.parametrize("per_op", [False, True])
@pytest.mark.parametrize("name", ["healthy_readbacks.py", "healthy_perop_masks.py", "healthy_transformer_lm.py",
                                  "healthy_grad_scaler.py", "healthy_missing_values.py", "healthy_gcn_norm.py",
                                  "healthy_masked_metrics.py", "healthy_per_sample_grads.py",
                                  "healthy_sparse_embedding.py"])
def test_healthy_code_stays_silent(name, per_op):
    report, incidents = _run(name, per_op)
    assert report is None and incidents == 0


def _report(report: dict) -> TrapReport:
    fields = {k: v for k, v in report.items() if k in TrapReport.__dataclass_fields__}
    fields["location"] = None
    return TrapReport(**fields)


def _panel(report: dict) -> str:
    stream = io.StringIO()
    render(_report(report), stream)
    return stream.getvalue()


def test_an_evaluation_step_is_called_so():
    report = _run("eval_relative_error.py", False)[0]
    assert _report(report).headline().endswith("(evaluation after step 3)")


def test_divergence_is_diagnosed_with_its_history():
    report, _ = _run("diverging_regression.py", False)
    assert (report["op"], report["kind"]) == ("aten.mse_loss.default", "+inf")
    div = report["divergence"]
    assert div["lr"] == 0.2 and div["growth"] > 1e20
    losses = [v for v in div["loss"] if isinstance(v, float)]
    assert len(losses) >= 20 and losses == sorted(losses)  # the loss grew every step
    assert len(div["steps"]) == len(div["loss"]) == len(div["grad_norm"])
    assert any(isinstance(v, float) for v in div["grad_norm"])  # norms every few steps
    assert "the run diverged" in report["hint"] and "learning rate 0.2" in report["hint"]
    panel = _panel(report)
    assert "the run diverged" in panel and "▁" in panel and "█" in panel


def test_healthy_training_has_no_divergence():
    """A loss that falls is not a divergence, nor is a short history."""
    assert diagnose(list(range(8)), [5.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.0, float("nan")], [None] * 8, [None] * 8,
                    [0.1]) is None
    assert diagnose([0, 1, 2], [1.0, 1e9, float("inf")], [None] * 3, [None] * 3, [0.1]) is None  # too short
    # a learning rate far too high overflows within three steps: a divergence when the growth leaves no doubt
    fast = diagnose([0, 1, 2, 3], [5270.0, 4.8e22, 7.5e21, float("inf")], [None] * 4, [None] * 4, [5.0])
    assert fast is not None and fast["lr"] == 5.0 and fast["growth"] > 1e18
    assert diagnose([0, 1, 2, 3], [1.0, 50.0, 2e3, float("inf")], [None] * 4, [None] * 4, [0.1]) is None
    # the loss exploded while the weights stayed put: the forward computation, not the learning rate
    flat = diagnose(list(range(6)), [2.0, 3.0, 40.0, 1e9, 1e31, float("inf")], [None] * 6,
                    [8.5, None, None, 8.5, None, None], [1e-4])
    assert "forward computation itself explodes" in divergence_hint(flat) and "1e-4" not in divergence_hint(flat)


def test_numpy_log_of_zero_is_reported():
    path = FIXTURES / "numpy_logistic.py"
    report, _ = _run("numpy_logistic.py", False)
    assert report["framework"] == "numpy"
    assert (report["op"], report["kind"], report["rule"]) == ("numpy.log", "-inf", "STB002")
    assert report["location"]["line"] == line_of(path, "# FAULT") and report["step"] is None
    assert np.geterr()["divide"] == "warn"  # NumPy's own settings are back


def test_a_parameter_made_nan_by_an_optimizer_with_eps_0_names_it():
    """Adam(eps=0): rows that never get a gradient are updated by 0 / 0 inside optimizer.step(); the next
    step finds the parameter NaN, and the hint names the optimizer's eps, not a learning rate."""
    report, _ = _run("adam_eps_zero.py", False)
    assert (report["phase"], report["parameter"], report["kind"]) == ("parameter", "model.emb.weight", "nan")
    assert report["step"] == 1 and "Adam runs with eps=0" in report["hint"]


@pytest.mark.parametrize("per_op", [False, True], ids=["default", "per-op"])
def test_spectral_norm_of_a_zero_weight_is_localized(per_op):
    """spectral_norm divides by sigma = 0 at step 0, the model built inside the recorded window: the
    replay must not trip over spectral_norm's views (is_leaf of them raises), and --per-op's own flag
    buffer is no input of the step."""
    path = FIXTURES / "spectral_norm_zero_init.py"
    report, _ = _run("spectral_norm_zero_init.py", per_op)
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == ("aten.div.Tensor", "forward", "nan",
                                                                               "STB201")
    assert report["location"]["line"] == line_of(path, "# FAULT") and report["step"] == 0


def test_numpy_names_the_ufunc_numpy_names():
    """NumPy's own ufunc name, not a guess from the line: the 0 / 0 next to a harmless sqrt is a divide.
    A 0 / 0 inside a branch that np.where discards keeps NumPy's usual warning and the run goes on."""
    path = FIXTURES / "numpy_zscore.py"
    with pytest.warns(RuntimeWarning, match="invalid value encountered in divide"):
        report, _ = _run("numpy_zscore.py", False)
    assert (report["op"], report["kind"], report["rule"]) == ("numpy.divide", "nan", "STB201")
    assert report["location"]["line"] == line_of(path, "# FAULT")
    assert "F.normalize" not in report["hint"] and "np.maximum" in report["hint"]  # NumPy's spelling


def test_numpy_errors_silenced_by_the_program_stay_silent():
    with stabcheck.trap(quiet=True):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(np.zeros(2))
        np.float64(0.0) ** 2


def test_a_swallowed_trap_stops_every_later_step(capsys):
    """The panel says "run stopped": a script that catches NonFiniteError does not train on."""
    report, _ = _run("swallowed_trap.py", False)
    assert report is None  # the script caught it
    out = capsys.readouterr().out
    assert out.count("caught NonFiniteError") == 4  # steps 1..4: each one stopped again


def test_training_threads_do_not_race_the_trap(monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_type))
    report, _ = _run("training_threads.py", False)
    assert errors and set(errors) == {NonFiniteError}  # every thread stopped, by the trap only
    assert report is None  # the main thread finished its join()


def test_keyboard_interrupt_exits_as_python_does(tmp_path):
    """No framework imported: a quick interpreter. Python dies of SIGINT; so does `stabcheck run`."""
    script = tmp_path / "interrupted.py"
    script.write_text("raise KeyboardInterrupt\n")
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=base_env())
    result = stabcheck_run(script, tmp_path=tmp_path)
    assert plain.returncode == result.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in result.stderr


def test_a_loop_without_backward_keeps_a_bounded_recording():
    """Raw torch code outside modules is recorded by reference: a long loop with no step boundary must
    not keep every temporary alive (memory stays near plain)."""
    from stabcheck.runtime.torch_record import MAX_EVENT_BYTES

    image = torch.rand(512, 512)  # 1 MiB
    with stabcheck.trap(quiet=True) as trap:
        for _ in range(200):
            float((image * 2.0 + 1.0).mean())
        held = trap.event_bytes
    assert 0 < held <= MAX_EVENT_BYTES


@pytest.mark.parametrize("on_device", [True, False], ids=["device", "host"])
def test_the_flight_recorder_holds_one_ring_not_a_tensor_per_step(on_device):
    """The loss and norms of the last HISTORY steps stay on the device for a divergence diagnosis, in one
    fixed ring: 0-d tensors alive for HISTORY steps among each step's activations fragmented the heap.
    On the host (CPU values, read by their checks anyway) they are kept as numbers: no tensor at all."""
    from stabcheck.runtime.divergence import HISTORY

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    with stabcheck.trap(quiet=True) as trap:
        trap.defer_cpu = on_device  # CPU values treated as an accelerator's
        for _ in range(HISTORY + 12):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps, losses, grad_norms, _ = trap.history.read()
        held = tensors_held(trap.history)
    assert steps == list(range(12, HISTORY + 12)) and all(v is not None for v in losses)
    assert abs(losses[-1] - float(torch.nn.functional.mse_loss(model(x), y))) < 0.01
    assert 1 <= sum(v is not None for v in grad_norms) <= 2  # every NORM_EVERY = 32 steps or less often
    assert held == (1 if on_device else 0)


def test_steps_are_counted_on_the_optimizer_still_stepping():
    """A teacher trained for 40 steps, then frozen, and a student distilled from it with an optimizer of
    its own: the student's fault at its third step is step 2, not step 42 of the teacher's count. (A GAN's
    optimizers stepping in turn still count one iteration once.)"""
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    t_opt, s_opt = torch.optim.SGD(teacher.parameters(), lr=0.1), torch.optim.SGD(student.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    with pytest.raises(NonFiniteError) as caught, stabcheck.trap(quiet=True):
        for _ in range(40):
            loss = torch.nn.functional.cross_entropy(teacher(x), y)
            t_opt.zero_grad()
            loss.backward()
            t_opt.step()
        for step in range(5):
            with torch.no_grad():
                target = torch.softmax(teacher(x) * (1000.0 if step == 2 else 1.0), dim=1)
            log_ratio = torch.log(target) - torch.log_softmax(student(x), dim=1)  # log(0) at step 2
            loss = (target * log_ratio).sum(1).mean()
            s_opt.zero_grad()
            loss.backward()
            s_opt.step()
    report = caught.value.report
    assert (report.op, report.step) == ("aten.log.default", 2)
