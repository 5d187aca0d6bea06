"""Helpers for the runtime-trap tests: run `python -m stabcheck run ...` in a subprocess.

(A module of its own, not conftest.py: tests/conftest.py already owns that module name.)
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def python_run(*args, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    """The same command under plain python (cached: several tests compare against it)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")
