"""`stabcheck run` runs a script exactly like `python` does (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import stabcheck

from runtime_helpers import FIXTURES, ROOT, _env, python_run

SCRIPT = FIXTURES / "script_semantics.py"
REL = SCRIPT.relative_to(ROOT)


def _stabcheck(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "stabcheck", "run", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=_env())


def test_same_main_argv_path_and_output_as_python():
    plain = python_run(REL, "a", "--lr", "3", "-m", "x")
    trapped = _stabcheck(REL, "a", "--lr", "3", "-m", "x")
    assert trapped.returncode == plain.returncode == 0
    assert trapped.stdout == plain.stdout
    seen = json.loads(trapped.stdout)
    assert seen["argv"] == [str(REL), "a", "--lr", "3", "-m", "x"]
    assert seen["path0"] == str(SCRIPT.parent)
    assert seen["name"] == "__main__" and seen["main_is_me"] and seen["config_module"] == "__main__"
    assert seen["torch_loaded"] is False  # the trap never imports torch for a script that does not


def test_run_module_like_python_dash_m():
    plain = python_run("-m", "script_semantics", "x", cwd=FIXTURES)
    trapped = _stabcheck("-m", "script_semantics", "x", cwd=FIXTURES)
    assert trapped.returncode == plain.returncode == 0
    assert trapped.stdout == plain.stdout


def test_sys_exit_status_passes_through():
    assert _stabcheck(REL, "--exit", "7").returncode == 7
    assert _stabcheck(REL, "--exit", "0").returncode == 0


def test_uncaught_exception_prints_the_normal_traceback():
    plain = python_run(REL, "--raise")
    trapped = _stabcheck(REL, "--raise")
    assert trapped.returncode == plain.returncode == 1
    assert trapped.stderr == plain.stderr
    # No frame of stabcheck's own (the checkout's folder may well be named `stabcheck`).
    assert str(Path(stabcheck.__file__).parent) not in trapped.stderr and "runpy" not in trapped.stderr


def test_an_error_of_stabcheck_itself_is_said_to_be_one(tmp_path):
    """The trap's frames are stripped from a traceback (the user's reads like plain python's), so an error
    that stabcheck's own code raised gets a line that says so, instead of passing for the script's."""
    pytest.importorskip("torch")
    script = tmp_path / "trap_bug.py"
    script.write_text("import torch\n"
                      "from stabcheck.runtime import torch_patches\n"
                      "torch_patches.active().roots = None  # the trap's own state broken: its code raises\n"
                      "x = torch.ones(2, requires_grad=True)\n"
                      "(x * 2).sum().backward()\n")
    result = _stabcheck(script)
    assert result.returncode == 1
    assert "AttributeError" in result.stderr and "raised inside stabcheck (stabcheck/runtime/" in result.stderr
    plain_error = _stabcheck(REL, "--raise")  # the script's own error: no such line
    assert "inside stabcheck" not in plain_error.stderr


def test_spawn_multiprocessing_reimports_the_script():
    trapped = _stabcheck(REL, "--spawn")
    assert trapped.returncode == 0, trapped.stderr
    assert "spawn [1, 4, 9] env True" in trapped.stdout


def test_missing_script_and_module_behave_like_python():
    missing = _stabcheck("no_such_script.py")
    assert missing.returncode == 2
    assert "can't open file" in missing.stderr and "Traceback" not in missing.stderr
    nomod = _stabcheck("-m", "no_such_module_xyz")
    assert nomod.returncode == 1
    assert "No module named" in nomod.stderr and "Traceback" not in nomod.stderr


def test_usage_errors_exit_2_without_traceback():
    for args in ([], ["--action", "explode", str(REL)], ["-m"]):
        proc = _stabcheck(*args)
        assert proc.returncode == 2, args
        assert "usage: stabcheck run" in proc.stderr and "Traceback" not in proc.stderr


def test_script_flags_are_never_parsed():
    proc = _stabcheck(REL, "--action", "warn", "--report-json", "x", "-h")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["argv"][1:] == ["--action", "warn", "--report-json", "x", "-h"]


def test_import_stabcheck_does_not_import_torch():
    code = ("import sys, stabcheck, stabcheck.runtime, stabcheck.runtime.cli, stabcheck.runtime.runner, "
            "stabcheck.runtime.api, stabcheck.runtime.report, stabcheck.runtime.hints; "
            "stabcheck.trap; assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
