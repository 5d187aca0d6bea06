"""What the default mode records of a step, and what it leaves out to stay cheap (torch_record.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import stabcheck  # noqa: E402
from stabcheck.runtime import NonFiniteError, torch_patches  # noqa: E402
from stabcheck.runtime.torch_record import LEARN_CALLS, RECHECK_EVERY, ModuleEvent, RandomDraws  # noqa: E402
from stabcheck.runtime.torch_support import site, where  # noqa: E402


class Gated(nn.Module):
    """Draws random numbers only when told to (stochastic depth gated from Python)."""

    def __init__(self):
        super().__init__()
        self.draw = False

    def forward(self, x):
        return x + torch.rand_like(x) if self.draw else x * 2


def _call(draws: RandomDraws, module, x):
    state, compare = draws.before(module)
    module(x)
    if compare:
        draws.after(module, state)
    return state


def test_a_module_that_never_draws_is_recorded_without_the_rng_state_once_learned():
    draws, model, x = RandomDraws(), nn.Linear(3, 3), torch.randn(2, 3)
    kept = [_call(draws, model, x) is not None for _ in range(3 * RECHECK_EVERY)]
    assert all(kept[:LEARN_CALLS])  # learning: every call keeps the state (and is compared)
    later = kept[LEARN_CALLS:]
    assert 1 <= sum(later) <= len(later) // RECHECK_EVERY + 1  # then only the rechecks


def test_a_module_that_draws_always_keeps_the_rng_state():
    draws, model, x = RandomDraws(), nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)), torch.randn(2, 3)
    assert all(_call(draws, model, x) is not None for _ in range(2 * RECHECK_EVERY))
    model.eval()  # in evaluation, dropout draws nothing: learned apart
    kept = [_call(draws, model, x) is not None for _ in range(2 * RECHECK_EVERY)]
    assert kept[:LEARN_CALLS] == [True] * LEARN_CALLS and not all(kept)


def test_a_module_that_draws_only_sometimes_is_caught_at_a_recheck():
    draws, model, x = RandomDraws(), Gated(), torch.randn(2, 3)
    for _ in range(RECHECK_EVERY - 1):
        _call(draws, model, x)
    model.draw = True
    for _ in range(RECHECK_EVERY):  # one of these is a recheck, which sees it draw
        _call(draws, model, x)
    assert all(_call(draws, model, x) is not None for _ in range(RECHECK_EVERY))
    assert draws.before(nn.MSELoss()) == (None, False)  # torch's own losses draw nothing


def test_a_replay_reproduces_a_fault_that_depends_on_the_dropout_mask():
    """A single unit dropped out by dropout makes log(0): only the same mask reproduces it, many
    steps into training (the module is known to draw: its calls keep the RNG state)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1)

        def forward(self, x):
            kept = F.dropout(x.abs() + 1.0, p=0.05, training=self.training)
            return torch.log(kept[:, :1]) + self.lin(x)

    torch.manual_seed(8)  # (its first dropped unit comes dozens of steps in)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteError) as info:
        with stabcheck.trap(quiet=True):
            for _ in range(200):
                loss = F.mse_loss(model(torch.randn(1, 4)), torch.zeros(1, 1))
                opt.zero_grad()
                loss.backward()
                opt.step()
    report = info.value.report
    assert report.step >= LEARN_CALLS and report.localized == "replay"
    assert report.op == "aten.log.default" and report.kind == "-inf"


def test_a_recorded_call_finds_its_line_only_when_reported():
    model = nn.Linear(2, 2)
    with stabcheck.trap(quiet=True):
        trap = torch_patches.active()
        model(torch.ones(1, 2)); line = _this_line()  # noqa: E702
        event = next(e for e in trap.events if isinstance(e, ModuleEvent))
        assert isinstance(event.where[0], type(_this_line.__code__))  # a code object and an offset, not a line
        assert (event.location.filename, event.location.line) == (__file__, line)
    assert site(None) is None and where(None) is None


def _this_line() -> int:
    import sys

    return sys._getframe(1).f_lineno
