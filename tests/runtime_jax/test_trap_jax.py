"""The runtime trap on JAX code: `stabcheck run` reports the primitive that made a NaN (found by
re-evaluating the failing jitted call primitive by primitive), its line, phase, hint and rule, as for
PyTorch; healthy code, intentional -inf masks and a script's own jax_debug_nans stay as under python."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from script_runs import FIXTURES, ROOT, Run, base_env, line_of, trap_silent

jax = pytest.importorskip("jax")  # CI installs jax; a bare checkout skips


def _env(**extra) -> dict:
    env = base_env()
    env.pop("JAX_DEBUG_NANS", None)
    env.pop("JAX_DEBUG_INFS", None)
    env["JAX_PLATFORMS"] = "cpu"  # the same CPU path everywhere, no accelerator probing
    env.update(extra)
    return env


def _trap(script: str, tmp_path, *options, **env) -> Run:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "stabcheck", "run", "--report-json", str(report), *options, str(FIXTURES / script)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env=_env(**env))
    return Run(proc.returncode, proc.stdout, proc.stderr, json.loads(report.read_text()) if report.exists() else None)


def _python(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FIXTURES / script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=_env())


def _assert_trapped(run: Run, script: str, op: str, phase: str, kind: str, rule: str, hint: str) -> dict:
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr and "FloatingPointError" not in run.stderr
    assert run.stderr.count("╭─ stabcheck:") == 1
    assert run.stderr.rstrip().endswith("-- run stopped (exit status 3)")
    r = run.report
    assert (r["framework"], r["status"], r["op"], r["phase"], r["kind"], r["rule"]) == (
        "jax", "trapped", op, phase, kind, rule)
    assert hint in r["hint"]
    assert r["location"]["filename"] == str(FIXTURES / script)
    assert r["location"]["line"] == line_of(FIXTURES / script, "# FAULT")
    assert r["step"] is None  # JAX has no optimizer step to count
    return r


def test_log_of_an_underflowed_softmax_is_reported_at_the_log_not_at_the_nan(tmp_path):
    # y * log(p) = 0 * -inf: JAX's own jax_debug_nans names the `mul`; the producer is the log
    run = _trap("jax_log_softmax.py", tmp_path)
    r = _assert_trapped(run, "jax_log_softmax.py", "log", "forward", "-inf", "STB002", "log of an exact 0")
    assert run.stdout == "batch 0: loss 5.1338\nbatch 1: loss 2.9895\n"  # stopped inside the third call
    assert r["inputs"][0]["zeros"] == 8 and r["outputs"][0]["-inf"] == 8
    assert r["detected"]["at"] == "jit" and "jit(cross_entropy)" in r["detected"]["message"]
    assert r["detected"]["location"]["line"] == line_of(FIXTURES / "jax_log_softmax.py", "eval_loss(params")
    assert "Invalid nan value" not in run.stdout  # JAX's de-optimized re-run never starts


def test_infinite_gradient_of_sqrt_at_zero_is_backward_at_the_forward_line(tmp_path):
    run = _trap("jax_sqrt_distance.py", tmp_path)
    r = _assert_trapped(run, "jax_sqrt_distance.py", "div", "backward", "+inf", "STB202",
                        "the gradient of sqrt is infinite at 0")
    assert r["forward"]["op"] == "sqrt"
    assert r["forward"]["location"]["line"] == r["location"]["line"]
    assert run.stdout == "step 0 done\n"
    assert r["inputs"][1]["zeros"] == 1  # the one duplicated pair


def test_log_of_softmax_on_one_line_is_the_logs_derivative_not_the_softmaxs(tmp_path):
    """`log(softmax(x))` written on one line: the backward division divides by log's input, which the
    softmax's own division made; the derivative is log's."""
    run = _trap("jax_log_of_softmax_one_line.py", tmp_path)
    r = _assert_trapped(run, "jax_log_of_softmax_one_line.py", "div", "backward", "nan", "STB002",
                        "the gradient of log at 0 is infinite")
    assert r["forward"]["op"] == "log"


def test_eager_value_and_grad_is_reported_where_jax_first_sees_the_nan(tmp_path):
    """Eager (un-jitted) value_and_grad: JAX checks the NaN only in a jit it builds itself, which passes
    the value on; it was once taken for a NaN constant and every later NaN of the run muted."""
    run = _trap("jax_eager_bce.py", tmp_path)
    assert run.returncode == 3 and "Traceback" not in run.stderr, run.stderr
    r = run.report
    assert (r["localized"], r["kind"]) == ("no", "nan") and "jax.jit" in r["hint"]
    assert r["location"]["line"] == line_of(FIXTURES / "jax_eager_bce.py", "# FAULT")


def test_eager_division_by_a_zero_norm(tmp_path):
    run = _trap("jax_zero_norm.py", tmp_path)
    r = _assert_trapped(run, "jax_zero_norm.py", "div", "forward", "nan", "STB201", "0 / 0")
    assert run.stdout == "norms computed for 4 tokens\n"
    assert r["inputs"][1]["zeros"] == 1 and r["outputs"][0]["nan"] == 4


def test_manual_sgd_under_warn_reports_once_and_the_loop_runs_to_the_end(tmp_path):
    run = _trap("jax_manual_sgd.py", tmp_path, "--action", "warn")
    assert run.returncode == 0, run.stderr
    assert run.stdout == _python("jax_manual_sgd.py").stdout  # every step ran, NaN loss included
    assert run.stdout.count("loss nan") == 4
    assert run.stderr.count("╭─ stabcheck:") == 1 and "run continues (--action warn)" in run.stderr
    r = run.report
    assert (r["status"], r["op"], r["phase"], r["kind"], r["rule"]) == ("warned", "log", "forward", "nan", "STB007")
    assert r["location"]["line"] == line_of(FIXTURES / "jax_manual_sgd.py", "# FAULT")
    assert r["inputs"][0]["negatives"] == 4


@pytest.mark.parametrize("script", ["jax_healthy.py", "jax_own_debug_nans.py"])
def test_runs_exactly_as_under_python(script, tmp_path):
    """Healthy code with -inf masks, a NaN skipped by nanmax, an inf sentinel; and a script that sets
    jax_debug_nans itself and catches JAX's FloatingPointError: same output, status, no report."""
    plain = _python(script)
    run = _trap(script, tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert run.report is None and trap_silent(run.stderr)
    if script == "jax_own_debug_nans.py":
        assert "skipped a batch: invalid value (nan) encountered in log" in run.stdout


def test_readme_sample_is_what_the_trap_prints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- runtime:start -->(.*?)<!-- runtime:end -->", readme, re.S)
    m = re.search(r"<!-- runtime-sample-jax: COLUMNS=(\d+) stabcheck (.+?) -->\n```text\n(.*?)```", section.group(1),
                  re.S)
    assert m, "the runtime section lost its JAX sample report"
    proc = subprocess.run([sys.executable, "-m", "stabcheck", *m.group(2).split()], cwd=ROOT, capture_output=True,
                          text=True, env=_env(COLUMNS=m.group(1)), timeout=180)
    assert proc.returncode == 3
    assert proc.stderr == m.group(3)


def test_trap_api_around_jax_code_stops_the_block_and_restores_jax():
    """`with stabcheck.trap()` in a script (not in the test process: JAX stays out of shared workers)."""
    path = FIXTURES / "jax_trap_api.py"
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "debug_nans inside: True",
        "masked row sum: 1.0",  # the -inf mask is no finding
        f"stopped: jax log -inf forward STB002 {line_of(path, '# FAULT')} True",
        "debug_nans after: False",
        "checks restored: True",
        "plain JAX after: True",  # NaN goes by as under plain JAX
    ]
    assert proc.stderr == ""  # quiet: no panel


def test_a_jax_the_trap_cannot_take_over_gets_its_own_nan_check_and_a_line_saying_so():
    result = _python("jax_unknown_internals.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "trapping" and "FloatingPointError: invalid value (nan) encountered in div" in lines
    assert lines[-1] == "after the block, jax_debug_nans is False"
    assert "stabcheck: the runtime trap does not support JAX" in result.stderr
