"""Instructions per training step of the runtime trap's default mode, counted by valgrind.

Timings of a 0.4 ms step on a shared machine move by several percent from run to run; an
instruction count does not. This runs the tiny MLP of runtime_overhead.py (forward, cross-entropy,
backward, SGD step; one thread) plain and under `stabcheck.trap()` in two processes under
callgrind, counts only the timed steps (a callgrind client request switches counting on and off
around them, so interpreter start-up and imports are left out) and prints instructions per step and
their ratio. Needs valgrind (with its callgrind.h) and a C compiler; says so and exits 0 without.

    python benchmarks/runtime_instructions.py [--steps 100]

An instruction ratio is not a time ratio (the trap's Python runs fewer instructions per second
than torch's kernels: on this project's machine 1.10x instructions were about 1.14x time); it is
the figure to compare two versions of the trap by.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

_MARKER = """#include <valgrind/callgrind.h>
void count_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; CALLGRIND_TOGGLE_COLLECT; }
void count_off(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
"""

_CHILD = """
import contextlib, ctypes, sys
import torch
from torch import nn
import stabcheck
sys.path.insert(0, {bench!r})
from runtime_overhead import MODELS

marker = ctypes.CDLL({lib!r})
torch.set_num_threads(1)
torch.manual_seed(0)
build, shape = MODELS["tiny MLP"]
model, x = build(), torch.randn(*shape)
y = torch.randint(0, 10, (shape[0],))
crit, opt = nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=1e-3)


def step():
    loss = crit(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


with (stabcheck.trap(quiet=True) if {variant!r} == "default" else contextlib.nullcontext()):
    for _ in range(30):  # warm-up: the trap learns what it need not keep
        step()
    marker.count_on()
    for _ in range({steps}):
        step()
    marker.count_off()
"""


def _count(variant: str, steps: int, lib: str, work: str) -> int:
    script = os.path.join(work, f"{variant}.py")
    with open(script, "w") as f:
        f.write(_CHILD.format(bench=os.path.dirname(os.path.abspath(__file__)), lib=lib, variant=variant, steps=steps))
    out = os.path.join(work, f"callgrind.{variant}")
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                           f"--callgrind-out-file={out}", sys.executable, script],
                          capture_output=True, text=True, check=False)
    found = re.findall(r"Collected : (\d+)", proc.stderr)
    if proc.returncode or not found:
        raise SystemExit(f"callgrind run of {variant} failed:\n{proc.stderr[-2000:]}")
    return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not shutil.which("valgrind") or not compiler or not os.path.exists("/usr/include/valgrind/callgrind.h"):
        print("valgrind (with valgrind/callgrind.h) and a C compiler are needed; nothing measured")
        return
    with tempfile.TemporaryDirectory() as work:
        lib = os.path.join(work, "marker.so")
        with open(os.path.join(work, "marker.c"), "w") as f:
            f.write(_MARKER)
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", lib, os.path.join(work, "marker.c")], check=True)
        with ThreadPoolExecutor(2) as pool:  # one process per core: the counts do not depend on load
            plain, default = pool.map(lambda v: _count(v, args.steps, lib, work), ("plain", "default"))
    print(f"tiny MLP, {args.steps} steps counted under callgrind (instructions per step)\n")
    print(f"{'variant':<10} {'instr/step':>12} {'x plain':>8}")
    print("-" * 32)
    for name, total in (("plain", plain), ("default", default)):
        print(f"{name:<10} {total / args.steps:12,.0f} {total / plain:7.3f}x")
    print(f"\nthe trap's fixed cost: {(default - plain) / args.steps:,.0f} instructions per step")


if __name__ == "__main__":
    main()
