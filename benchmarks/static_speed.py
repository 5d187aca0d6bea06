"""How fast `stabcheck check` is, next to the bare parsers, in one run.

Lints a tree of real ML code (default: the installed `keras/src`, ~300k
lines) and prints, from interleaved rounds (best of N, so the machine's noise
hits every variant alike):

- bare `libcst.parse_module` over the same files (the issue's yardstick),
- bare `ast.parse` (the parser stabcheck uses),
- stabcheck, one process, all rules,
- stabcheck with all cores (the default),
- stabcheck with all cores through the result cache: cold (an empty
  `.stabcheck_cache/`, filled as it goes) and warm (the rerun of an unchanged
  tree: files are read and hashed, nothing is parsed),

and the ratios between them. Every variant reads and decodes the files
itself. Needs `pip install libcst` for the libcst column.

    python benchmarks/static_speed.py [TREE] [--rounds N]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

from stabcheck import engine
from stabcheck.cache import DIRNAME, Cache
from stabcheck.checks import RULES
from stabcheck.config import Settings
from stabcheck.files import discover


def default_tree() -> Path:
    spec = importlib.util.find_spec("keras")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("keras is not installed: pass a directory to lint (pip install keras gives keras/src)")
    return Path(spec.submodule_search_locations[0]) / "src"


def read(path: str) -> str:
    with open(path, "rb") as fh:
        return engine.decode(fh.read())


def bare_parse(files, parse) -> None:
    for path in files:
        try:
            parse(read(path))
        except Exception:
            pass


def stabcheck_run(files, workers: int, cache: Cache | None = None) -> int:
    jobs = [engine.FileJob(path, frozenset(RULES)) for path in files]
    return len(engine.check_jobs(jobs, workers, cache))


class CacheRuns:
    """Cold: a new, empty cache directory each time. Warm: one directory,
    filled once, opened afresh each time (as a new `stabcheck check` does)."""

    def __init__(self, files, workers: int):
        self.files, self.workers = files, workers
        self.tmp = tempfile.TemporaryDirectory(prefix="stabcheck-bench-")
        self.rounds = 0
        self.warm_dir = self._fresh("warm")
        stabcheck_run(files, workers, Cache(self.warm_dir))

    def _fresh(self, name: str) -> Path:
        # The cache creates its own directory, but not the folders above it.
        parent = Path(self.tmp.name) / name
        parent.mkdir()
        return parent / DIRNAME

    def cold(self) -> int:
        self.rounds += 1
        return stabcheck_run(self.files, self.workers, Cache(self._fresh(f"cold{self.rounds}")))

    def warm(self) -> int:
        return stabcheck_run(self.files, self.workers, Cache(self.warm_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", nargs="?", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tree = args.tree or default_tree()
    files = discover([str(tree)], Settings(root=tree)).files
    lines = sum(read(f).count("\n") for f in files)
    engine._raise_recursion_limit()

    try:
        import libcst
    except ImportError:
        libcst = None
        print("libcst is not installed: its column is skipped (pip install libcst)")

    cores = os.cpu_count() or 1
    cached = CacheRuns(files, cores)
    variants = {
        "ast.parse": lambda: bare_parse(files, ast.parse),
        "stabcheck -j1": lambda: stabcheck_run(files, 1),
        f"stabcheck -j{cores} (default)": lambda: stabcheck_run(files, cores),
        f"stabcheck -j{cores}, cold cache": cached.cold,
        f"stabcheck -j{cores}, warm cache": cached.warm,
    }
    if libcst is not None:
        variants = {"libcst.parse_module": lambda: bare_parse(files, libcst.parse_module), **variants}
    best = {name: float("inf") for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)

    findings = stabcheck_run(files, 1)
    print(f"tree: {tree}")
    print(f"{len(files)} files, {lines:,} lines, {findings} findings; best of {args.rounds} interleaved rounds\n")
    width = max(map(len, best))
    for name, t in best.items():
        print(f"  {name:<{width}}  {t:7.2f} s  {lines / t:>10,.0f} lines/s")
    single = best["stabcheck -j1"]
    print()
    if libcst is not None:
        base = best["libcst.parse_module"]
        print(f"  stabcheck -j1 / libcst.parse_module            = {single / base:.2f}x  (target <= 1.30x)")
    print(f"  stabcheck -j1 / ast.parse                      = {single / best['ast.parse']:.2f}x")
    par = best[f"stabcheck -j{os.cpu_count()} (default)"]
    print(f"  speed-up with {os.cpu_count()} cores                         = {single / par:.2f}x")
    cold, warm = best[f"stabcheck -j{cores}, cold cache"], best[f"stabcheck -j{cores}, warm cache"]
    print(f"  warm cache / cold cache                        = {warm / cold:.1%}  (target <= 10%)")
    assert cached.warm() == findings, "the warm cache must report what a full check reports"


if __name__ == "__main__":
    main()
