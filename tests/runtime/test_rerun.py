"""`stabcheck run` re-runs the script to the failing step with every op checked when a replay of the
step cannot localize the value; each fixture is a shape whose replay really fails today (`--no-rerun`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runtime_helpers import FIXTURES, ROOT, _env, line_of, stabcheck_run

pytest.importorskip("torch")

NOTICE = "re-running the script to step"

# fixture, op, kind, step, function, module, why the replay fails (the note of `--no-rerun`)
UNREPLAYABLE = [
    ("annealed_temperature.py", "aten.div.Tensor", "+inf", 6, "forward", "model", "replay did not reproduce"),
    ("sampled_negatives.py", "aten.div.Tensor", "nan", 33, "forward", "loss_fn", "replay did not reproduce"),
    ("long_rollout.py", "aten.div.Tensor", "+inf", 2, "rollout", None, "step too long to replay"),
]


@pytest.mark.parametrize("fixture,op,kind,step,function,module,note", UNREPLAYABLE, ids=[f[0] for f in UNREPLAYABLE])
def test_rerun_localizes_what_the_replay_cannot(run_trap, tmp_path, fixture, op, kind, step, function, module, note):
    path = FIXTURES / fixture
    result = run_trap(path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["step"]) == (op, "forward", kind, step)
    assert report["location"] == {"filename": str(path), "line": line_of(path, "# FAULT"), "function": function}
    assert report["module"] == module and report["mode"] == "training"
    assert report["localized"] == "rerun" and report["status"] == "trapped"
    assert report["rerun"]["outcome"] == "localized" and report["rerun"]["step"] == step
    assert report["rule"] == "STB201" and "--per-op" not in report["hint"]
    assert any(s.get("zeros") or s.get("value") == 0.0 for s in report["inputs"])  # the zero denominator, shown
    # one notice while it re-runs, one panel (the localized one), no output of the re-run
    assert result.stderr.count(NOTICE) == 1 and result.stderr.count("╭─ stabcheck:") == 1
    assert f"rerun    re-ran the script to step {step} with per-op checks" in result.stderr
    assert result.stderr.rstrip().endswith(f"{op} produced {kind.replace('inf', 'Inf').replace('nan', 'NaN')} "
                                           f"in forward (step {step}) -- run stopped (exit status 3)")
    for k in range(step):
        assert result.stdout.count(f"step {k} loss") == (1 if fixture != "sampled_negatives.py" else 0)
    assert "Traceback" not in result.stderr
    assert report["rerun"]["first"].endswith(note)  # what the first run's replay made of it


def test_a_nan_only_printed_after_the_step_is_localized_by_the_rerun(run_trap):
    """A NaN read back that no recorded op made is reported (an inf there is a sentinel; a NaN is not),
    and the re-run names the division, with the statistics the trap reads back quietly."""
    path = FIXTURES / "printed_precision.py"
    result = run_trap(path)
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["op"], report["phase"], report["kind"], report["rule"]) == ("aten.div.Tensor", "forward", "nan",
                                                                               "STB201")
    assert report["location"]["line"] == line_of(path, "# FAULT") and report["localized"] == "rerun"
    assert report["detected"]["at"] == "read" and report["inputs"][1]["zeros"] == 1
    assert result.stdout.count("precision") == 4  # steps 0-3 print; step 4 reads the NaN back


def test_no_rerun_keeps_the_unlocalized_report(run_trap):
    result = run_trap("--no-rerun", FIXTURES / "annealed_temperature.py")
    assert result.returncode == 3
    report = result.report
    assert (report["localized"], report["phase"], report["op"], report["rerun"]) == ("no", "unknown", None, None)
    assert report["detected"]["message"].endswith("replay did not reproduce") and "--per-op" in report["hint"]
    assert NOTICE not in result.stderr and "│ rerun " not in result.stderr


def test_warn_goes_on_and_reports_the_rerun_at_the_end(run_trap):
    path = FIXTURES / "annealed_temperature.py"
    result = run_trap("--action", "warn", path)
    assert result.returncode == 0, result.stderr
    assert "step 9 loss nan" in result.stdout and result.stdout.count("step 0 loss") == 1
    assert "re-running the script to step 6 with per-op checks when this run ends" in result.stderr
    assert result.stderr.count("╭─ stabcheck:") == 1
    report = result.report
    assert (report["status"], report["localized"], report["step"]) == ("warned", "rerun", 6)
    assert report["location"]["line"] == line_of(path, "# FAULT")


def test_a_run_that_does_not_repeat_itself_is_reported_as_such(run_trap, tmp_path):
    """The script resumes from the checkpoint its first run saved: the re-run meets the value at once, not
    at the step that failed, and the report says so instead of naming an op."""
    path = FIXTURES / "resumed_checkpoint.py"
    result = run_trap(path, tmp_path / "ckpt.pt")
    assert result.returncode == 3, result.stderr
    report = result.report
    assert (report["localized"], report["phase"], report["op"], report["step"]) == ("no", "unknown", None, 6)
    assert report["rerun"]["outcome"] == "not reproduced"
    assert report["rerun"]["detail"].endswith("it met a non-finite value at step 0 already")
    assert "does not repeat itself" in report["hint"] and "STABCHECK_RERUN" in report["hint"]
    assert result.stderr.count("╭─ stabcheck:") == 1 and "resumed at" not in result.stdout


def test_no_rerun_from_a_pipe_or_another_thread(tmp_path):
    """stdin is a pipe (a re-run could not read it again); the value was met in a training thread that the
    per-op checks do not see: the report says why it was not re-run."""
    report = tmp_path / "pipe.json"
    proc = subprocess.run([sys.executable, "-m", "stabcheck", "run", "--report-json", str(report),
                           FIXTURES / "annealed_temperature.py"], input="", capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=120)
    assert proc.returncode == 3 and NOTICE not in proc.stderr
    import json

    data = json.loads(report.read_text())
    assert data["rerun"]["outcome"] == "skipped" and "stdin is a pipe" in data["rerun"]["detail"]
    assert "rerun    not re-run: stdin is a pipe" in proc.stderr

    threads = stabcheck_run(FIXTURES / "training_threads.py", tmp_path=tmp_path)
    assert threads.report["rerun"]["outcome"] == "skipped"
    assert "a thread other than the one that started the trap" in threads.report["rerun"]["detail"]
    assert NOTICE not in threads.stderr
