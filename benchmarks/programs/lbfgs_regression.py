"""Full-batch L-BFGS fit of an MLP regressor (2.4 M parameters, tanh), the way small regression and
physics-informed network fits are usually written: `optim.LBFGS(model.parameters(), max_iter=20,
history_size=10)` and a closure that zeroes the gradients, computes the MSE on the whole batch and
calls backward(); every optimizer.step() evaluates the closure up to 20 times. The targets are a
seeded smooth function of the inputs plus noise.

    python benchmarks/programs/lbfgs_regression.py [--steps 3] [--batch-size 2048]

Prints the loss after each step; the loop's own wall time goes to stderr
(benchmarks/runtime_programs.py reads it, with the peak memory of the process).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps (each up to --max-iter closure calls)")
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    x = torch.randn(args.batch_size, 256)
    w = torch.randn(256, 4) / 16
    y = torch.sin(x @ w).sum(dim=1, keepdim=True) + 0.05 * torch.randn(args.batch_size, 1)
    width = args.width
    model = nn.Sequential(nn.Linear(256, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
    print(f"{sum(p.numel() for p in model.parameters())} parameters, batch {args.batch_size}")
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=args.max_iter, history_size=10)
    criterion = nn.MSELoss()
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        return loss

    start = time.perf_counter()
    for step in range(args.steps):
        loss = optimizer.step(closure)
        print(f"step {step}: loss {loss.item():.6f} after {evaluations} closure evaluations")
        if not loss.isfinite():
            sys.exit("the loss is not finite")
    print(f"train-loop-seconds {time.perf_counter() - start:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
