"""`stabcheck run` on TensorFlow 2 / Keras 3 scripts that really produce each fault on CPU:
the report names the producing op, the user's file and line, the phase, the inputs."""

from __future__ import annotations

import pytest

from script_runs import trap_silent
from tf_helpers import FIXTURES, line_of, panels, run, stabcheck_run

pytest.importorskip("tensorflow")

LOG_SOFTMAX = FIXTURES / "tf_log_softmax.py"
ZERO_NORM = FIXTURES / "tf_zero_norm_divide.py"
KERAS_BCE = FIXTURES / "keras_log_one_minus_p.py"
MASK = FIXTURES / "tf_attention_mask.py"

# fixture, args, op, kind, rule, function, step, how it was localized, what the cheap check saw
FAULTS = [
    (LOG_SOFTMAX, ["eager"], "Log", "-inf", "STB002", "cross_entropy", 3, "per-op", "loss"),
    (LOG_SOFTMAX, ["function"], "Log", "-inf", "STB002", "cross_entropy", 3, "replay", "loss"),
    (ZERO_NORM, ["eager"], "RealDiv", "nan", "STB201", "__call__", 2, "per-op", "loss"),
    (ZERO_NORM, ["function"], "RealDiv", "nan", "STB201", "__call__", 2, "replay", "loss"),
    (KERAS_BCE, ["fit"], "Log", "-inf", "STB002", "bce", 3, "replay", "loss"),
    (KERAS_BCE, ["train_on_batch"], "Log", "-inf", "STB002", "bce", 3, "replay", "loss"),
]


@pytest.mark.parametrize("path,args,op,kind,rule,function,step,localized,at", FAULTS,
                         ids=[f"{f[0].stem}-{f[1][0]}" for f in FAULTS])
def test_fault_is_localized(tmp_path, path, args, op, kind, rule, function, step, localized, at):
    result = stabcheck_run(path, *args, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert report is not None, result.stderr
    assert report["status"] == "trapped" and report["framework"] == "tensorflow"
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == (op, "forward", kind, rule)
    assert report["location"] == {"filename": str(path), "line": line_of(path, "# FAULT"), "function": function}
    assert report["step"] == step
    assert report["localized"] == localized
    assert report["detected"]["at"] == at
    assert report["hint"]
    # the producer's inputs were finite and hold the zero that caused it
    assert report["inputs"] and all(s["nan"] == 0 and s["inf"] == 0 for s in report["inputs"])
    assert any(s["zeros"] > 0 and s["min"] == 0.0 for s in report["inputs"])
    assert report["outputs"][0][{"nan": "nan", "-inf": "-inf"}[kind]] > 0
    # the steps before the fault ran and printed as usual; one panel, no traceback
    if "train_on_batch" in args or "fit" not in args:
        assert f"step {step - 1} loss" in result.stdout and f"step {step} loss" not in result.stdout
    assert panels(result.stderr) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{op} produced" in result.stderr and "(exit status 3)" in result.stderr


@pytest.mark.parametrize("mode,localized", [("eager", "per-op"), ("function", "replay")])
def test_backward_fault_names_the_forward_op(tmp_path, mode, localized):
    """Forward finite, gradient infinite: the backward op, and the forward op and line that created it."""
    path = FIXTURES / "tf_sqrt_distance.py"
    result = stabcheck_run(path, mode, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == ("SqrtGrad", "backward", "+inf", "STB202")
    line = line_of(path, "# FAULT")
    assert report["location"]["line"] == line and report["location"]["filename"] == str(path)
    assert report["forward"]["op"] == "sqrt" and report["forward"]["location"]["line"] == line
    assert (report["step"], report["localized"], report["detected"]["at"]) == (1, localized, "backward")
    assert panels(result.stderr) == 1 and "Traceback" not in result.stderr


def test_fault_inside_a_keras_layer_names_the_layer(tmp_path):
    path = FIXTURES / "keras_layer_divide.py"
    result = stabcheck_run(path, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["step"]) == ("RealDiv", "forward", "nan", 1)
    assert report["location"] == {"filename": str(path), "line": line_of(path, "# FAULT"), "function": "call"}
    assert report["module"] == "sequential/normalize"


def test_input_statistics_of_the_saturated_sigmoid(tmp_path):
    report = stabcheck_run(KERAS_BCE, "fit", tmp_path=tmp_path).report
    (stats,) = report["inputs"]
    assert stats["shape"] == [8, 1] and stats["dtype"] == "float32" and stats["device"] == "cpu"
    assert stats["min"] == stats["max"] == 0.0 and stats["zeros"] == 8  # 1 - y_pred == 0 for the whole batch
    assert report["outputs"][0]["-inf"] == 8
    assert report["detected"]["location"]["line"] == line_of(KERAS_BCE, "model.fit(")


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_intentional_minus_inf_masks_are_silent(tmp_path, mode):
    plain = run([MASK, mode], tmp_path, report=False)
    assert plain.returncode == 0, plain.stderr
    result = stabcheck_run(MASK, mode, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.report is None
    assert result.stdout == plain.stdout
    assert trap_silent(result.stderr)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_masks_are_not_blamed_for_a_later_fault(tmp_path, mode):
    result = stabcheck_run(MASK, mode, "--fault", tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["step"]) == ("Log", "forward", "-inf", 3)
    assert report["location"]["line"] == line_of(MASK, "# FAULT")


def test_warn_reports_once_and_fit_goes_on(tmp_path):
    result = stabcheck_run("--action", "warn", KERAS_BCE, "fit", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "loss [nan]" in result.stdout  # fit ran to the end, as without stabcheck
    assert panels(result.stderr) == 1
    assert result.report["status"] == "warned" and result.report["op"] == "Log"
    assert result.report["location"]["line"] == line_of(KERAS_BCE, "# FAULT")


def test_keras_callback_without_stabcheck_run(tmp_path):
    """`callbacks=[TrapNonFinite(...)]` under plain python: the same report, then fit raises."""
    result = run([KERAS_BCE, "callback", tmp_path / "report.json"], tmp_path)
    assert result.returncode == 1  # the NonFiniteError leaves fit uncaught, as any exception would
    assert "stabcheck.runtime.config.NonFiniteError: stabcheck: Log produced -Inf in forward (step 3)" in result.stderr
    assert panels(result.stderr) == 1
    report = result.report
    assert report["framework"] == "tensorflow" and report["op"] == "Log"
    assert report["location"]["line"] == line_of(KERAS_BCE, "# FAULT")
    # the traceback is the user's: one frame where the trap re-raises, none of its internals
    assert result.stderr.count("tf_trap.py") == 1 and "in emit" not in result.stderr


@pytest.mark.parametrize("action", ["stop", "warn"])
def test_api_traps_a_function_traced_before_it(tmp_path, action):
    """`with stabcheck.trap():` around a tf.function traced before the trap: it is retraced with the
    checks; "stop" stops before the update (weights untouched); the patches are gone afterwards."""
    import json

    path = FIXTURES / "tf_pretraced_api.py"
    result = run([path, tmp_path / "report.json", action], tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["traced_before"] == 1 and summary["incidents"] == 1
    assert summary["patched_after"] == "tensorflow.python.eager.backprop"
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == ("RealDiv", "forward", "nan", "STB201")
    assert report["location"]["line"] == line_of(path, "# FAULT")
    assert report["status"] == {"stop": "trapped", "warn": "warned"}[action]
    if action == "stop":
        assert summary["outcome"] == "stopped: RealDiv" and summary["weights_kept"] is True
        assert "step 3 loss" not in result.stdout
    else:
        assert summary["outcome"] == "finished" and "step 4 loss nan" in result.stdout


def test_keras_on_the_torch_backend_is_the_pytorch_trap(tmp_path):
    """KERAS_BACKEND=torch: TensorFlow is never imported; the PyTorch adapter traps the same fault."""
    pytest.importorskip("torch")
    result = stabcheck_run(KERAS_BCE, "fit", tmp_path=tmp_path, KERAS_BACKEND="torch")
    assert result.returncode == 3, result.stderr
    report = result.report
    assert report["framework"] == "torch" and report["status"] == "trapped"
    assert report["step"] == 3 and report["kind"] == "-inf"  # log(0) is the producer (the loss is +inf)
    assert report["detected"]["at"] == "backward"  # Keras' torch trainer calls loss.backward()
    assert panels(result.stderr) == 1 and "Traceback" not in result.stderr


def test_keras_on_the_torch_backend_names_the_users_line(tmp_path):
    pytest.importorskip("torch")
    report = stabcheck_run(KERAS_BCE, "fit", tmp_path=tmp_path, KERAS_BACKEND="torch").report
    assert (report["op"], report["phase"]) == ("aten.log.default", "forward")
    assert report["location"]["line"] == line_of(KERAS_BCE, "# FAULT")


@pytest.mark.parametrize("mode", ["fit", "loop"])
def test_loss_scale_optimizer_overflows_are_not_findings(tmp_path, mode):
    """Mixed precision: scaled float16 gradients overflow on purpose and LossScaleOptimizer skips the step
    (under fit, and in a tf.function loop that reads the optimizer as a module global)."""
    result = stabcheck_run(FIXTURES / "keras_loss_scale.py", mode, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "finite loss True, scale lowered True\n"  # the overflows really happened
    assert result.report is None and trap_silent(result.stderr)


def test_nan_in_the_training_data_is_reported_as_data(tmp_path):
    """A NaN pixel under fit: the batch is checked before any replay (no op, no dropout, is blamed), and
    TensorFlow's log of the aborted step does not surround the panel."""
    path = FIXTURES / "keras_nan_pixel.py"
    result = stabcheck_run(path, tmp_path=tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["phase"], report["kind"], report["op"], report["step"]) == ("input", "nan", None, 5)
    assert report["inputs"][0]["nan"] == 1 and report["inputs"][0]["shape"] == [8, 8, 8, 1]
    assert report["location"]["line"] == line_of(path, "model.fit(")
    assert "GradientTape" not in report["detected"]["message"] and "model.fit" in report["detected"]["message"]
    assert "data" in report["hint"]
    assert "FloatingPointError" not in result.stderr and "Traceback" not in result.stderr


def test_an_inf_in_eager_data_is_reported_as_data(tmp_path):
    """An inf record that only the backward turns into NaN (tanh saturates it in the forward): the
    record is the cause, not the backward MatMul that multiplied it by 0."""
    path = FIXTURES / "tf_inf_record.py"
    result = stabcheck_run(path, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["phase"], report["kind"], report["op"], report["step"]) == ("input", "+inf", None, 2)
    assert report["inputs"][0]["+inf"] == 1 and "data" in report["hint"]


@pytest.mark.parametrize("fixture,call,message,step", [
    # (fit: seen at the end of epoch 0, after its 4 steps)
    ("keras_jit_compiled.py", "model.fit(", "the metric loss of training epoch 0", 4),
    ("tf_jit_step.py", "loss = train_step(", "the output of train_step() (its output) is nan", 0),
])
def test_an_xla_compiled_step_is_reported_as_unchecked(tmp_path, fixture, call, message, step):
    """XLA runs no py_function, so an XLA-compiled step gets no gradient check: its NaN shows first in
    what the step returns (a custom loop) or in the epoch's logs (fit); the report says the step was
    compiled by XLA and how to have it checked, not that no gradient computed the value."""
    path = FIXTURES / fixture
    result = stabcheck_run(path, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert report["detected"]["message"].startswith(message), report["detected"]
    assert report["location"]["line"] == line_of(path, call) and report["step"] == step
    assert "XLA" in report["hint"] and "jit_compile=False" in report["hint"]
    assert "no gradient computed" not in report["detected"]["message"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("fixture,mode,message,hint", [
    ("keras_validation_nan.py", "evaluation", "loss of an evaluation", "validation or test data"),
    ("keras_metric_inf.py", "training", "the metric relative_error of training epoch 0", "guard its denominator"),
])
def test_what_no_gradient_sees_is_reported_from_the_logs(tmp_path, fixture, mode, message, hint):
    """A NaN only in the validation data, an inf only in a metric: training stays finite, so the gradient
    checks never see them; the logs Keras hands its callbacks do, as an evaluation or a metric."""
    path = FIXTURES / fixture
    result = stabcheck_run(path, tmp_path=tmp_path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert report["mode"] == mode and report["detected"]["message"].startswith(message)
    assert report["location"]["line"] == line_of(path, "model.fit(") and hint in report["hint"]
    assert "Traceback" not in result.stderr
