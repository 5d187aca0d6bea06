"""Helpers for the TensorFlow/Keras trap tests: run scripts in subprocesses (TensorFlow is imported
only there), read the `--report-json` file back.

(Module names here are unique across tests/: no conftest.py, no runtime_helpers.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "runtime"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict | None


def env(**extra) -> dict:
    e = dict(os.environ)
    e.pop("STABCHECK_RUNTIME", None)
    e.setdefault("PYTHONHASHSEED", "0")
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    e["COLUMNS"] = "200"  # one line per report row in the panel
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


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def panels(stderr: str) -> int:
    return stderr.count("╭─ stabcheck:")
