"""What the runtime-trap tests share: running a script in a subprocess with
this checkout importable, and reading its `--report-json` back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "runtime"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    report: dict | None


def base_env() -> dict:
    """The parent's environment, minus any trap config, with this checkout first
    on the path and one line per report row in the panel."""
    env = dict(os.environ)
    env.pop("STABCHECK_RUNTIME", None)
    env.setdefault("PYTHONHASHSEED", "0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"
    return env


def trap_silent(stderr: str) -> bool:
    """Nothing on stderr came from stabcheck: no message of its own and no
    frame of its code. (Not the bare word: the checkout's own folder may be
    named `stabcheck`, and so appear in every path.)"""
    return "stabcheck:" not in stderr and "stabcheck run:" not in stderr and str(ROOT / "stabcheck") not in stderr


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")
