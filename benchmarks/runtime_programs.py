"""Overhead of the runtime trap on whole programs (benchmarks/programs/), each run as a process.

Every program runs under plain `python`, `python -m stabcheck run` (default) and `--per-op`; the
L-BFGS closure loops also under the in-process API (`with stabcheck.trap():` around the script),
where per-op flags once fragmented the heap. Variants are interleaved round by round, their order
rotated each round. Prints, from ONE run, for each program and variant: the training loop's own
time (the program prints it: interpreter and torch start-up excluded), the whole process's wall
time, the peak RSS of the process (os.wait4), each as a ratio to plain, and whether stdout is
identical to plain's. Times: minimum over rounds; peak RSS: maximum over rounds.

    python benchmarks/runtime_programs.py [--rounds 3] [--threads 1] [--programs lm mnist style lbfgs]

Targets (issue #11): default <= 1.10x and per-op <= 1.50x training-loop time on the two example
programs (word LM, MNIST); peak RSS <= 1.50x plain on the closure-based L-BFGS loops.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROGRAMS_DIR = HERE / "programs"

# name -> (script, arguments for a run of 5-20 s on a 2-core CPU, closure loop?)
PROGRAMS = {
    "lm": ("word_language_model.py", ["--steps", "60", "--log-interval", "10"], False),
    "mnist": ("mnist_classifier.py", ["--epochs", "1"], False),
    "style": ("style_transfer_lbfgs.py", ["--steps", "40"], True),
    "lbfgs": ("lbfgs_regression.py", ["--steps", "2"], True),
}
TITLES = {"lm": "word LM (LSTM)", "mnist": "MNIST CNN", "style": "style transfer (L-BFGS)",
          "lbfgs": "MLP fit (L-BFGS)"}

# the script under the in-process API, as a user who cannot use `stabcheck run` writes it
API = ("import runpy, sys, stabcheck\n"
       "del sys.argv[0]  # '-c'\n"
       "per_op = sys.argv.pop(0) == 'per-op'\n"
       "with stabcheck.trap(quiet=True, per_op=per_op):\n"
       "    runpy.run_path(sys.argv[0], run_name='__main__')\n")
LOOP_TIME = re.compile(r"train-loop-seconds ([0-9.]+)")
TIME_TARGETS = {("lm", "default"): 1.10, ("lm", "per-op"): 1.50, ("mnist", "default"): 1.10,
                ("mnist", "per-op"): 1.50}
RSS_TARGET = 1.50


def commands(program: str) -> dict[str, list[str]]:
    script, args, closure_loop = PROGRAMS[program]
    path = str(PROGRAMS_DIR / script)
    py = sys.executable
    variants = {
        "plain": [py, path, *args],
        "default": [py, "-m", "stabcheck", "run", path, *args],
        "per-op": [py, "-m", "stabcheck", "run", "--per-op", path, *args],
    }
    if closure_loop:
        variants["trap()"] = [py, "-c", API, "default", path, *args]
        variants["trap(per_op)"] = [py, "-c", API, "per-op", path, *args]
    return variants


def run_once(cmd: list[str], env: dict) -> dict:
    """Run one process; its stdout, loop time, wall time and peak RSS (MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"exit status {proc.returncode}: {' '.join(cmd)}\n{stderr[-2000:]}")
    loop = LOOP_TIME.search(stderr)
    return {"stdout": stdout, "loop": float(loop.group(1)) if loop else float("nan"), "wall": wall,
            "rss": usage.ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP/MKL threads of every child (default: torch's own choice)")
    parser.add_argument("--programs", nargs="*", default=list(PROGRAMS), choices=list(PROGRAMS))
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"threads per child: {args.threads or 'torch default'}; {args.rounds} interleaved rounds; "
          "times: min over rounds, peak RSS: max over rounds\n")
    results: dict = {}
    for r in range(args.rounds):
        for program in args.programs:
            variants = list(commands(program).items())
            shift = r % len(variants)
            for variant, cmd in variants[shift:] + variants[:shift]:
                results.setdefault((program, variant), []).append(run_once(cmd, env))
    header = (f"{'program':<24} {'variant':<13} {'loop s':>7} {'x plain':>7} {'wall s':>7} {'x plain':>7} "
              f"{'peak MiB':>8} {'x plain':>7}  same out  target")
    print(header)
    print("-" * len(header))
    missed = []
    for program in args.programs:
        runs = {v: results[(program, v)] for v in commands(program)}
        base = {k: (min if k != "rss" else max)(run[k] for run in runs["plain"]) for k in ("loop", "wall", "rss")}
        for variant, vruns in runs.items():
            fig = {k: (min if k != "rss" else max)(run[k] for run in vruns) for k in ("loop", "wall", "rss")}
            ratio = {k: fig[k] / base[k] for k in fig}
            same = all(run["stdout"] == runs["plain"][0]["stdout"] for run in vruns)
            marks = []
            target = TIME_TARGETS.get((program, variant))
            if target is not None:
                ok = ratio["loop"] <= target
                marks.append(f"loop <= {target:.2f}x {'ok' if ok else 'MISSED'}")
                missed += [] if ok else [f"{program} {variant} time"]
            if PROGRAMS[program][2] and variant != "plain":
                ok = ratio["rss"] <= RSS_TARGET
                marks.append(f"RSS <= {RSS_TARGET:.2f}x {'ok' if ok else 'MISSED'}")
                missed += [] if ok else [f"{program} {variant} memory"]
            if not same:
                missed.append(f"{program} {variant} output differs")
            print(f"{TITLES[program]:<24} {variant:<13} {fig['loop']:7.2f} {ratio['loop']:6.2f}x {fig['wall']:7.2f} "
                  f"{ratio['wall']:6.2f}x {fig['rss']:8.0f} {ratio['rss']:6.2f}x  {'yes' if same else 'NO':<8}  "
                  f"{', '.join(marks)}".rstrip())
        print()
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if missed:
        print("missed:", ", ".join(missed))


if __name__ == "__main__":
    main()
