"""Overhead of the runtime trap on a training step (forward, loss, backward, SGD step).

Prints, from ONE run, time per step and the ratio to plain PyTorch for:
plain, stabcheck default (`stabcheck run`), stabcheck per-op (`--per-op`) and
torch.autograd.detect_anomaly. Variants are interleaved round by round; each
figure is the minimum over rounds of the median step time within a round.

    python benchmarks/runtime_overhead.py [--rounds 7] [--steps 60]

Targets (issue #3): default <= 1.10x on the wider MLP and <= 1.25x on the tiny
one; per-op <= 1.5x on the wider MLP.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch
from torch import nn

import stabcheck

TARGETS = {("wider MLP", "default"): 1.10, ("tiny MLP", "default"): 1.25, ("wider MLP", "per-op"): 1.50}


def mlp(width_in, width, depth):
    layers, d = [], width_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, 10))
    return nn.Sequential(*layers)


def cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    )


MODELS = {
    "tiny MLP": (lambda: mlp(32, 64, 4), (16, 32)),
    "wider MLP": (lambda: mlp(512, 1024, 4), (256, 512)),
    "small CNN": (cnn, (32, 3, 32, 32)),
}


def variants():
    return {
        "plain": contextlib.nullcontext,
        "default": lambda: stabcheck.trap(quiet=True),
        "per-op": lambda: stabcheck.trap(per_op=True, quiet=True),
        "detect_anomaly": lambda: torch.autograd.detect_anomaly(check_nan=True),
    }


def time_steps(model, opt, criterion, x, y, steps):
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per variant per round (wider MLP: 1/4)")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Anomaly Detection has been enabled")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; "
          f"{args.rounds} interleaved rounds, min over rounds of the median step time\n")
    header = f"{'model':<10} {'variant':<15} {'ms/step':>8} {'x plain':>8}  target"
    print(header)
    print("-" * len(header))
    failed = []
    for name in args.models:
        build, shape = MODELS[name]
        model = build()
        x = torch.randn(*shape)
        y = torch.randint(0, 10, (shape[0],))
        criterion = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        steps = max(5, args.steps // 4) if name == "wider MLP" else args.steps
        best = {}
        for _ in range(args.rounds):
            for variant, make in variants().items():
                with make():
                    time_steps(model, opt, criterion, x, y, 3)  # warm-up inside the variant
                    t = time_steps(model, opt, criterion, x, y, steps)
                best[variant] = min(best.get(variant, float("inf")), t)
        for variant, t in best.items():
            ratio = t / best["plain"]
            target = TARGETS.get((name, variant))
            mark = ""
            if target is not None:
                ok = ratio <= target
                mark = f"<= {target:.2f}x  {'ok' if ok else 'MISSED'}"
                if not ok:
                    failed.append(f"{name} {variant}")
            print(f"{name:<10} {variant:<15} {t * 1e3:8.3f} {ratio:7.2f}x  {mark}".rstrip())
        print()
    if failed:
        print("missed targets:", ", ".join(failed))


if __name__ == "__main__":
    main()
