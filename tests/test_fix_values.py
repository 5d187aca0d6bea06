"""Every fix in the catalog, evaluated: the original and the fixed function
compute the same values on moderate inputs (safe fixes: for every input where
the original is finite), and the fixed one stays finite on extreme inputs
where the original is not. Safe fixes apply with `--fix` alone; unsafe ones
need `--unsafe-fixes`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stabcheck.cli import main

torch = pytest.importorskip("torch")

T = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\ndef f(x, y):\n    "
N = "import numpy as np\nfrom scipy.special import expit\n\n\ndef f(x, y):\n    "

# (rule, source of f(x, y), safe, framework)
CASES = [
    ("STB001", T + "return (x * 2 + 1).softmax(-1).log()", True, "torch"),
    ("STB001", T + "return torch.log(  # keep\n        F.softmax(x, -1))", True, "torch"),
    ("STB002", T + "return torch.log(torch.sigmoid(x))", True, "torch"),
    ("STB002", T + "return torch.log(1 - torch.sigmoid(x))", True, "torch"),
    ("STB002", N + "return np.log(expit(x)) + np.log(1 - expit(x))", True, "numpy"),
    ("STB003", T + "return torch.log(torch.sum(torch.exp(x), dim=-1))", True, "torch"),
    ("STB003", T + "return x.exp().sum(-1).log()", True, "torch"),
    ("STB003", N + "return np.log(np.sum(np.exp(x), axis=-1))", True, "numpy"),
    ("STB004", T + "return torch.log(1 + torch.exp(x))", True, "torch"),
    ("STB004", T + "return torch.log1p(torch.exp(-x))", True, "torch"),
    ("STB004", N + "return np.log(1 + np.exp(x))", True, "numpy"),
    ("STB005", T + "return torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True)", True, "torch"),
    ("STB005", T + "return 1 / (1 + torch.exp(-x))", True, "torch"),
    ("STB005", N + "return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)", True, "numpy"),
    ("STB006", T + "return torch.sqrt(torch.exp(x))", True, "torch"),
    ("STB102", T + "return F.binary_cross_entropy(torch.sigmoid(x), y)", True, "torch"),
    ("STB102", T + "return nn.BCELoss()(x.sigmoid(), y)", True, "torch"),
    ("STB102", T + "p = torch.sigmoid(x)  # probabilities\n    return F.binary_cross_entropy(p, y)", False, "torch"),
    ("STB102", T + "p = torch.sigmoid(x)\n    return F.binary_cross_entropy(p, y) + (p > 0.5).sum()", False, "torch"),
    ("STB002", T + "p = torch.sigmoid(x)\n    return y * torch.log(p) + (1 - y) * torch.log(1 - p)", False, "torch"),
    ("STB002", T + "probs = F.softmax(x, dim=-1)\n    return y * torch.log(probs)", False, "torch"),
]


def _fix(tmp_path, capsys, source: str, unsafe: bool) -> str:
    target = tmp_path / "m.py"
    target.write_text(source)
    main(["check", "--isolated", "--no-cache", "--select", "ALL", "--fix", *(["--unsafe-fixes"] * unsafe), str(target)])
    capsys.readouterr()
    return target.read_text()


def _load(source: str):
    space: dict = {}
    exec(compile(source, "<fixed>", "exec"), space)
    return space["f"]


EXTREME = np.array([[300.0, -300.0, 0.0], [-1000.0, 1000.0, 5.0]])
# exp(0.5 * x) only doubles the range: beyond exp's float32 limit, inside the fix's.
EXTREME_FOR = {"STB006": np.array([[150.0, -150.0, 0.0], [170.0, 5.0, -5.0]])}


def _inputs(framework: str, extreme, dtype):
    rng = np.random.default_rng(0)
    x = extreme if extreme is not None else rng.normal(0.0, 3.0, (4, 5))
    y = (rng.random(x.shape) > 0.5).astype(x.dtype)
    if framework == "torch":
        return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)
    return x.astype(np.float32 if dtype is torch.float32 else np.float64), y


def _array(value):
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


@pytest.mark.parametrize("rule, source, safe, framework", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_fix_keeps_values_and_stays_finite(rule, source, safe, framework, tmp_path, capsys):
    fixed = _fix(tmp_path, capsys, source, unsafe=False)
    assert (fixed != source) == safe, f"{rule}: the fix should be {'safe' if safe else 'unsafe'}"
    if not safe:
        fixed = _fix(tmp_path, capsys, source, unsafe=True)
        assert fixed != source
    assert all(comment in fixed for comment in re.findall(r"#.*", source)), fixed
    original, rewritten = _load(source), _load(fixed)
    with np.errstate(all="ignore"):
        x, y = _inputs(framework, None, torch.float64)
        np.testing.assert_allclose(_array(rewritten(x, y)), _array(original(x, y)), rtol=1e-9, atol=1e-12)
        before, after = (_extreme(fn, framework, EXTREME_FOR.get(rule, EXTREME)) for fn in (original, rewritten))
    assert all(np.isfinite(a).all() for a in after), f"{rule}: the fixed code is not finite on extreme inputs:\n{fixed}"
    if rule != "STB102":  # torch's BCE clamps its log at -100: finite, only wrong
        assert not all(np.isfinite(a).all() for a in before), f"{rule}: the extreme inputs do not break the original"


def _extreme(fn, framework: str, inputs) -> list:
    """The value on extreme float32 inputs, and for torch its gradient."""
    x, y = _inputs(framework, inputs, torch.float32)
    if framework != "torch":
        return [_array(fn(x, y))]
    x.requires_grad_(True)
    out = fn(x, y)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return [_array(out), _array(grad)]
