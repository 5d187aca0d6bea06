"""Helpers for the runtime-trap tests: run `python -m stabcheck run ...` in a subprocess.

(A module of its own, not conftest.py: tests/conftest.py already owns that module name.)
"""

from __future__ import annotations

import collections
import functools
import gc
import json
import subprocess
import sys
from pathlib import Path

from script_runs import FIXTURES, ROOT, Run, base_env as _env, line_of  # noqa: F401 (re-exported)


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


def tensors_held(root) -> int:
    """Tensors reachable from `root` through containers and stabcheck's own objects (not through
    the modules and ops that records name)."""
    import torch

    seen, count, stack = set(), 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            count += 1
        elif isinstance(obj, (list, tuple, dict, collections.deque)) or type(obj).__module__.startswith("stabcheck"):
            stack.extend(gc.get_referents(obj))
    return count
