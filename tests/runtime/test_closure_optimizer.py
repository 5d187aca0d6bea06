"""Optimizers that evaluate a closure many times inside one step (L-BFGS): a NaN at any iterate is
trapped and named at the user's line, never at the optimizer's own code; --per-op keeps the flags of
all those evaluations in fixed buffers, not one small tensor each (memory stays near plain)."""

from __future__ import annotations

import runpy

import pytest
from runtime_helpers import FIXTURES, line_of, tensors_held

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import stabcheck  # noqa: E402
from stabcheck.runtime import NonFiniteError  # noqa: E402


def _report(name: str, per_op: bool):
    try:
        with stabcheck.trap(quiet=True, per_op=per_op) as trap:
            runpy.run_path(str(FIXTURES / name), run_name="__main__")
    except NonFiniteError as exc:
        return exc.report.to_dict()
    assert trap.incidents == 0
    return None


@pytest.mark.parametrize("per_op", [False, True])
def test_nan_at_a_later_iterate_is_replayed_to_its_line(per_op):
    """The ninth closure evaluation of the first step makes the NaN; the closure calls no module."""
    name = "lbfgs_variance.py"
    report = _report(name, per_op)
    assert report is not None
    assert (report["op"], report["phase"], report["kind"], report["localized"]) == (
        "aten.log.default", "forward", "nan", "replay")
    assert report["location"]["line"] == line_of(FIXTURES / name, "# FAULT")
    assert report["location"]["function"] == "closure"
    assert report["detected"]["at"] == "backward" and report["mode"] == "training"


def test_per_op_nan_off_the_loss_at_an_iterate():
    """A monitored value, NaN at one iterate, reaches no loss and no gradient: --per-op does not stop the
    run for it (a NaN the program neutralises is no fault), but remembers the op that made it; when the
    program prints the monitored values at its end, the report names the closure's line. Default mode
    sees the NaN only then, and its replay of the last step cannot place it (`stabcheck run` re-runs)."""
    name = "lbfgs_rate_monitor.py"
    report = _report(name, True)
    assert report is not None
    assert (report["op"], report["phase"], report["kind"]) == ("aten.log.default", "forward", "nan")
    assert report["location"]["line"] == line_of(FIXTURES / name, "# FAULT")
    assert report["detected"]["at"] == "read" and report["localized"] == "per-op"
    default = _report(name, False)
    assert default["detected"]["at"] == "read" and default["localized"] == "no"


def test_per_op_flags_of_many_closure_evaluations_hold_no_tensor_each():
    """Healthy L-BFGS under --per-op: every op of every closure evaluation stays flagged until the next
    step's sync, in at most one buffer per device and direction, whatever the number of evaluations.
    (A 0-d tensor per flag, alive until the sync, fragmented the host heap: 3x plain's peak RSS.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    x = torch.randn(128, 8)
    y = torch.sin(x.sum(dim=1, keepdim=True))
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=25)
    criterion = nn.MSELoss()
    evaluations = []

    def closure():
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        evaluations.append(len(trap.flags))
        return loss

    with stabcheck.trap(quiet=True, per_op=True) as trap:
        for _ in range(3):
            evaluations.clear()
            loss = optimizer.step(closure)
        pending = len(trap.flags)
        held = tensors_held(trap.flags)
    assert trap.incidents == 0 and torch.isfinite(loss)
    # every op of every evaluation of the last step waits for the sync, accumulating within the step
    assert len(evaluations) >= 20 and evaluations == sorted(evaluations)
    assert pending >= 10 * len(evaluations) and pending > evaluations[0]
    assert 1 <= held <= 2
