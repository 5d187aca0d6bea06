"""Helpers for the TensorFlow/Keras trap tests: run scripts in subprocesses (TensorFlow is imported
only there), read the `--report-json` file back.

(Module names here are unique across tests/: no conftest.py, no runtime_helpers.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from script_runs import FIXTURES, ROOT, Run, base_env, line_of  # noqa: F401 (re-exported)


def env(**extra) -> dict:
    e = base_env()
    e["TF_CPP_MIN_LOG_LEVEL"] = "3"  # TensorFlow's C++ start-up chatter off
    e["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU path everywhere
    e.setdefault("KERAS_BACKEND", "tensorflow")
    e.update(extra)
    return e


def run(cmd: list, tmp_path: Path, report: bool = True, timeout: float = 180, **extra_env) -> Run:
    path = tmp_path / "report.json"
    if path.exists():
        path.unlink()
    proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env(**extra_env))
    data = json.loads(path.read_text()) if report and path.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, data)


def stabcheck_run(*args, tmp_path: Path, **kw) -> Run:
    return run(["-m", "stabcheck", "run", "--report-json", tmp_path / "report.json", *args], tmp_path, **kw)


def panels(stderr: str) -> int:
    return stderr.count("╭─ stabcheck:")
