"""Helpers for the runtime-trap tests: run `python -m stabcheck run ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "runtime"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict | None


def _env():
    env = dict(os.environ)
    env.pop("STABCHECK_RUNTIME", None)
    env.setdefault("PYTHONHASHSEED", "0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"  # one line per report row in the panel
    return env


def stabcheck_run(*args, tmp_path: Path, cwd: Path = ROOT, timeout: float = 120) -> Run:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "stabcheck", "run", "--report-json", str(report), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    data = json.loads(report.read_text()) if report.exists() else None
    return Run(proc.returncode, proc.stdout, proc.stderr, data)


def python_run(*args, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


@pytest.fixture
def run_trap(tmp_path):
    def run(*args, **kwargs):
        return stabcheck_run(*args, tmp_path=tmp_path, **kwargs)

    return run
