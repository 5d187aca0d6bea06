"""`stabcheck.trap()` in-process: raises after the report, and restores every global it touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import line_of

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import stabcheck  # noqa: E402
from stabcheck.runtime import NonFiniteError  # noqa: E402


def _globals():
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

    return (nn.Module.__call__, torch.autograd.backward, dict(_global_optimizer_pre_hooks),
            dict(_global_optimizer_post_hooks), torch._C._len_torch_function_stack(),
            torch._C._len_torch_dispatch_stack(), torch.is_anomaly_enabled(), torch.is_grad_enabled())


def _train(model, steps, poison_at=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.MSELoss()
    for step in range(steps):
        x = torch.randn(4, 3)
        if step == poison_at:
            x[0, 0] = float("nan")
        loss = crit(model(x), torch.zeros(4, 2))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_context_manager_raises_and_restores_globals(tmp_path):
    before = _globals()
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(NonFiniteError) as info:
        with stabcheck.trap(quiet=True, report_json=str(tmp_path / "r.json")):
            _train(model, 5, poison_at=2)
    report = info.value.report
    assert isinstance(info.value, FloatingPointError)
    assert report.phase == "input" and report.step == 2 and report.kind == "nan"
    assert (tmp_path / "r.json").exists()
    assert _globals() == before


def test_decorator_and_nesting():
    before = _globals()

    @stabcheck.trap(quiet=True)
    def run():
        with stabcheck.trap(quiet=True):  # nested: reuses the outer trap
            x = torch.full((3,), 2.0, requires_grad=True)
            (torch.log(x - 2.0)).sum().backward()

    with pytest.raises(NonFiniteError) as info:
        run()
    assert info.value.report.detected["at"] == "backward"
    assert _globals() == before
    with pytest.raises(NonFiniteError):  # a decorated function can be called again
        run()


def test_warn_mode_keeps_the_random_stream():
    def run(trapped):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))
        if trapped:
            with stabcheck.trap(action="warn", quiet=True) as trap:
                _train(model, 4, poison_at=1)
            assert trap.incidents == 1
        else:
            _train(model, 4, poison_at=1)
        return torch.rand(3)

    assert torch.equal(run(True), run(False))


def test_per_op_reports_a_nan_kept_that_never_reaches_the_loss():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[-1.0, 2.0]])
    with pytest.raises(NonFiniteError) as info:
        with stabcheck.trap(per_op=True, quiet=True):
            unused = torch.sqrt(x)  # the NaN: never used
            loss = model(x).sum()
            loss.backward()
            opt.step()
    report = info.value.report
    # the loss and gradients are finite, so the step's flag alone stops nothing; the NaN the program
    # still holds when the trap ends is reported, and the recorded step replays to its producer
    assert report.detected["at"] == "exit"
    assert (report.op, report.phase, report.kind, report.localized) == ("aten.sqrt.default", "forward", "nan", "replay")
    assert report.location.line == line_of(Path(__file__), "# the NaN: never used")
    del unused


def test_default_mode_stays_silent_on_unused_values():
    model = nn.Linear(2, 1)
    with stabcheck.trap(quiet=True) as trap:
        torch.sqrt(torch.tensor([-1.0]))
        model(torch.ones(1, 2)).sum().backward()
    assert trap.incidents == 0


@pytest.mark.gpu
def test_no_host_sync_per_op_on_cuda():
    """Forward, loss and backward under sync_debug_mode("error"): any per-op host sync raises."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    for per_op in (False, True):
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        crit = nn.CrossEntropyLoss()
        x = torch.randn(32, 64, device=dev)
        y = torch.randint(0, 10, (32,), device=dev)
        with stabcheck.trap(per_op=per_op, quiet=True) as trap:
            for step in range(3):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    logits = model(x)
                    loss = crit(logits, y) + torch.log(torch.sigmoid(logits)).mean() * 0.0
                    opt.zero_grad()
                    loss.backward()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                opt.step()  # the one host sync per step
            assert trap.incidents == 0
        # and the trap still fires on the device, named at the op: log(0) fed to the loss
        with pytest.raises(NonFiniteError) as info:
            with stabcheck.trap(per_op=per_op, quiet=True):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    logits = model(x)
                    loss = crit(torch.log(torch.relu(logits) * 0.0), y)
                    opt.zero_grad()
                    loss.backward()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                opt.step()
        report = info.value.report
        assert (report.op, report.phase, report.kind) == ("aten.log.default", "forward", "-inf")
        assert report.inputs[0]["device"].startswith("cuda")


def test_warn_mode_leaves_no_mode_behind():
    """A trap fired from inside backward() (hand-written loss) must not leak its recording mode."""
    before = _globals()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with stabcheck.trap(action="warn", quiet=True) as trap:
        for step in range(4):
            p = torch.sigmoid(model(torch.rand(4, 3) * (500.0 if step == 1 else 1.0)))
            loss = -torch.log(1 - p).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert torch._C._len_torch_function_stack() <= 1
    assert trap.incidents == 1
    assert trap.first_report.op == "aten.log.default"
    assert _globals() == before


@pytest.mark.parametrize("per_op", [False, True])
def test_device_path_reads_nothing_back_until_the_step(monkeypatch, per_op):
    """The accelerator code path, exercised on CPU: no value is read back to the host during forward,
    loss and backward (on a GPU each read would be a sync); the fault is still named at the step."""
    reads = []
    in_region = [False]
    for name in ("item", "__bool__", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            if in_region[0]:
                reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.CrossEntropyLoss()
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    with pytest.raises(NonFiniteError) as info:
        with stabcheck.trap(per_op=per_op, quiet=True) as trap:
            trap.defer_cpu = True
            for step in range(3):
                in_region[0] = True
                logits = model(x)
                if step == 2:
                    logits = torch.log(torch.relu(logits) * 0.0)  # the fault
                loss = crit(logits, y)
                opt.zero_grad()
                loss.backward()
                in_region[0] = False
                opt.step()
    assert reads == []
    report = info.value.report
    assert (report.op, report.phase, report.kind, report.step) == ("aten.log.default", "forward", "-inf", 2)
    assert report.location.line == line_of(Path(__file__), "# the fault")


def test_gradient_check_follows_a_model_whose_gradients_change_kind():
    """The fused gradient check remembers that a model's gradients were of one kind; a model that later
    yields sparse gradients (an Embedding with sparse=True) still has a NaN gradient caught, before the
    update, with the producing op named."""
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Embedding(10, 4)
            self.sparse = nn.Embedding(10, 4, sparse=True)
            self.use_sparse = False

        def forward(self, ids):
            out = self.dense(ids)
            if self.use_sparse:
                out = out + self.sparse(ids).sqrt()  # sqrt at 0 only once the sparse table is zeroed
            return out.sum()

    model = Bag()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.tensor([1, 2, 3])
    with pytest.raises(NonFiniteError) as info:
        with stabcheck.trap(quiet=True):
            for step in range(6):
                if step == 4:
                    model.use_sparse = True
                    with torch.no_grad():
                        model.sparse.weight.zero_()
                loss = model(ids)
                opt.zero_grad()
                loss.backward()
                opt.step()
    report = info.value.report
    assert (report.step, report.phase, report.op, report.rule) == (4, "backward", "aten.div.Tensor", "STB202")
    assert report.forward["op"] == "sqrt" and report.location.line == line_of(Path(__file__), "only once the sparse")
    assert torch.isfinite(model.sparse.weight).all()  # stopped before the update
