"""`stabcheck run` on scripts that really produce each fault on CPU: the report names the producer."""

from __future__ import annotations

import pytest

from runtime_helpers import FIXTURES, line_of, python_run
from script_runs import trap_silent

pytest.importorskip("torch")

MODES = {"default": [], "per-op": ["--per-op"]}

# fixture, expected op, phase, kind, rule, text on the expected line (`# FAULT` marks it), extra expectations
FAULTS = [
    ("log_one_minus_p.py", "aten.log.default", "forward", "-inf", "STB002", "# FAULT", {"function": "bce"}),
    ("zero_norm_divide.py", "aten.div.Tensor", "forward", "nan", "STB201", "# FAULT", {"module": "embedder"}),
    ("sqrt_distance.py", "aten.div.Tensor", "backward", "-inf", "STB202", "# FAULT",
     {"forward_op": "sqrt", "module": "net"}),
    ("naive_softmax.py", "aten.exp.default", "forward", "+inf", "STB005", "# FAULT", {"module": "model"}),
    ("fp16_exp_overflow.py", "aten.exp.default", "forward", "+inf", "STB005", "# FAULT", {"module": "model"}),
    # L-BFGS evaluates its closure several times per step: the model's call is recorded with the loss's
    ("lbfgs_closure_log.py", "aten.log.default", "forward", "-inf", "STB002", "# FAULT",
     {"module": "model", "function": "forward", "step": 0}),
    # the producer is inside torch's attention: the line is the user's call of it, in their forward
    ("mha_empty_sequence.py", "aten._softmax.default", "forward", "nan", None, "# FAULT",
     {"module": "model.attn", "function": "forward", "step": 3}),
    # two optimizers stepping in turn: the step is the iteration (the first optimizer's steps)
    ("gan_saturated_discriminator.py", "aten.log.default", "forward", "-inf", "STB002", "# FAULT", {"step": 6}),
    ("poisoned_parameter.py", None, "parameter", "+inf", None, "loss = criterion(model(x), y)",
     {"parameter": "model.2.weight", "module": "model.2"}),
    # the NaN is masked in the forward and comes back through the gradient: the hint says so
    ("masked_sqrt_where.py", "aten.sqrt.default", "forward", "nan", "STB007", "# FAULT",
     {"hint": "'double where'", "step": 0}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fixture,op,phase,kind,rule,needle,extra", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_localized(run_trap, mode, fixture, op, phase, kind, rule, needle, extra):
    path = FIXTURES / fixture
    result = run_trap(*MODES[mode], path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert report is not None, result.stderr
    assert report["status"] == "trapped" and report["framework"] == "torch"
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == (op, phase, kind, rule)
    assert report["location"]["filename"] == str(path)
    assert report["location"]["line"] == line_of(path, needle)
    if "function" in extra:
        assert report["location"]["function"] == extra["function"]
    if "module" in extra:
        assert report["module"] == extra["module"]
    if "forward_op" in extra:
        assert report["forward"]["op"] == extra["forward_op"]
        assert report["forward"]["location"]["line"] == line_of(path, needle)
    if "parameter" in extra:
        assert report["parameter"] == extra["parameter"]
    if "step" in extra:
        assert report["step"] == extra["step"]
    if "hint" in extra:
        assert extra["hint"] in report["hint"]
    assert report["hint"]
    # the panel is printed once, and no traceback from stabcheck (or anything) follows it
    assert result.stderr.count("╭─ stabcheck:") == 1
    assert "Traceback" not in result.stderr


def test_input_statistics_show_the_zero(run_trap):
    report = run_trap(FIXTURES / "log_one_minus_p.py").report
    (stats,) = report["inputs"]
    assert stats["shape"] == [8, 1] and stats["dtype"] == "float32" and stats["device"] == "cpu"
    assert stats["min"] == 0.0 and stats["zeros"] == 8 and stats["nan"] == 0 and stats["inf"] == 0
    assert report["outputs"][0]["-inf"] == 8
    assert report["step"] == 3


def test_step_and_detection_are_reported(run_trap):
    report = run_trap(FIXTURES / "sqrt_distance.py").report
    assert report["step"] == 1
    assert report["detected"]["at"] == "optimizer"
    assert report["localized"] == "replay"


@pytest.mark.parametrize("mode", MODES)
def test_intentional_minus_inf_mask_is_silent(run_trap, mode):
    path = FIXTURES / "attention_mask.py"
    plain = python_run(path)
    result = run_trap(*MODES[mode], path)
    assert result.returncode == 0, result.stderr
    assert result.report is None
    assert result.stdout == plain.stdout
    assert trap_silent(result.stderr)


@pytest.mark.parametrize("status", ["0", "5"])
def test_healthy_run_is_unchanged(run_trap, status):
    path = FIXTURES / "healthy.py"
    plain = python_run(path, status)
    result = run_trap(path, status)
    assert result.returncode == plain.returncode == int(status)
    assert result.stdout == plain.stdout
    assert result.stderr == plain.stderr
    assert result.report is None


def test_warn_reports_once_and_continues(run_trap):
    path = FIXTURES / "log_one_minus_p.py"
    result = run_trap("--action", "warn", path)
    assert result.returncode == 0, result.stderr
    assert "step 4 loss" in result.stdout  # the run went on to the end
    assert result.stderr.count("╭─ stabcheck:") == 1  # one incident, not the cascade
    assert result.report["status"] == "warned" and result.report["op"] == "aten.log.default"


def test_spawned_dataloader_workers(run_trap):
    result = run_trap(FIXTURES / "dataloader_spawn.py")
    assert result.returncode == 0, result.stderr
    assert "trained 4 batches" in result.stdout


def test_torchrun_each_rank_reports(tmp_path):
    """`torchrun --nproc-per-node 2 -m stabcheck run ...` on CPU (gloo): one report per rank, naming it."""
    import json
    import subprocess
    import sys

    from runtime_helpers import ROOT, _env

    pytest.importorskip("torch.distributed")
    path = FIXTURES / "ddp_log_zero.py"
    env = _env()
    env.update(MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-backend", "c10d", "-m", "stabcheck", "run",
                           "--report-json", str(tmp_path / "r.json"), path],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode != 0
    for rank in (0, 1):
        report = json.loads((tmp_path / f"r.rank{rank}.json").read_text())
        assert report["rank"] == rank
        assert (report["op"], report["phase"], report["step"]) == ("aten.log.default", "forward", 2)
        assert report["location"]["line"] == line_of(path, "# FAULT")
        assert report["module"] == "model.module"


def test_api_inside_stabcheck_run_nests(run_trap, tmp_path):
    script = tmp_path / "nested.py"
    script.write_text("import stabcheck\n"
                      "with stabcheck.trap():\n"
                      "    import torch\n"
                      "    x = torch.zeros(2, requires_grad=True)\n"
                      "    torch.log(x).sum().backward()\n")
    result = run_trap(script)
    assert result.returncode == 3, result.stderr
    assert result.report["detected"]["at"] == "backward"
    assert result.report["detected"]["location"]["line"] == 5
    assert "Traceback" not in result.stderr


def test_a_swallowed_trap_still_fails_the_run(run_trap, tmp_path):
    script = tmp_path / "swallow.py"
    script.write_text("import torch\n"
                      "model = torch.nn.Linear(2, 1)\n"
                      "try:\n"
                      "    loss = torch.nn.functional.mse_loss(model(torch.full((1, 2), float('nan'))), torch.zeros(1, 1))\n"
                      "except Exception as exc:\n"
                      "    print('caught', type(exc).__name__)\n"
                      "print('finished')\n")
    result = run_trap(script)
    assert "caught NonFiniteError" in result.stdout and "finished" in result.stdout
    assert result.returncode == 3
    assert result.report["phase"] == "input"


def test_a_missing_label_is_named_as_the_target(run_trap):
    """A NaN that only the labels hold is data, and the report says which argument of the loss held it
    (the target, not the model's input) and points at the labels."""
    path = FIXTURES / "missing_label.py"
    result = run_trap(path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["phase"], report["kind"], report["step"]) == ("input", "nan", 4)
    assert report["inputs"][0]["argument"] == "target" and report["inputs"][0]["nan"] == 1
    assert report["location"]["line"] == line_of(path, "loss = F.mse_loss(")
    assert "labels" in report["hint"]
    assert "input    target: float32[16x1]" in result.stderr


@pytest.mark.parametrize("dtype,magnitude,expected", [
    ("float32", 6.3e19, "the run diverged"),  # a learning-rate schedule that blew the weights up
    ("float16", 625.0, "float16 holds at most 65504"),  # a forward overflow under mixed precision
    ("float32", 300.0, "multiplication overflowed"),  # nothing to tell: the op's own hint
])
def test_an_overflow_hint_reads_the_operands(dtype, magnitude, expected):
    """An op that overflowed names the cause its operands show: float32 values near 1e19 grew over many
    steps (divergence), float16 values in the hundreds only left float16's range."""
    from stabcheck.runtime import hints

    _rule, hint = hints.lookup("forward", "aten.mul.Tensor", None, "+inf", "y = h * h", "torch", magnitude, dtype,
                               magnitude)
    assert expected in hint
