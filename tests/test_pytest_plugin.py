"""`pytest --stabcheck-trap`: each test runs under the runtime trap; without
the flag the auto-loaded plugin imports nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

TESTS = textwrap.dedent(
    """
    import sys

    def test_nothing_heavy_is_imported():
        assert "stabcheck.runtime" not in sys.modules
        assert "torch" not in sys.modules

    def test_nan_in_backward():
        import torch
        x = torch.full((3,), 2.0, requires_grad=True)
        torch.log(x - 2.0).sum().backward()

    def test_caught_by_the_test():
        import torch
        x = torch.full((3,), 2.0, requires_grad=True)
        try:
            torch.log(x - 2.0).sum().backward()
        except FloatingPointError:
            pass

    def test_healthy():
        import torch
        x = torch.ones(3, requires_grad=True)
        (x * 2).sum().backward()
    """
)


def pytest_run(tmp_path, *args) -> subprocess.CompletedProcess:
    (tmp_path / "test_user.py").write_text(TESTS, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args, "test_user.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


def test_entry_point_is_registered():
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "stabcheck"]
    assert ep.value == "stabcheck.pytest_plugin"


def test_off_by_default_and_imports_nothing(tmp_path):
    pytest.importorskip("torch")
    proc = pytest_run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "4 passed" in proc.stdout


def test_trap_fails_the_test_with_the_report(tmp_path):
    pytest.importorskip("torch")
    proc = pytest_run(tmp_path, "--stabcheck-trap", "-k", "not nothing_heavy")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]
    assert "stabcheck: NaN/Inf trap on" in out
    assert "PASSED test_user.py::test_healthy" in out
    for name in ("test_nan_in_backward", "test_caught_by_the_test"):
        assert f"FAILED test_user.py::{name} - Failed: stabcheck" in out
        section = out.split(f"_ {name} _", 1)[1].split("\n_", 1)[0]
        assert "stabcheck trapped a non-finite value" in section
        assert "aten.log.default produced -Inf in forward" in section  # localized with no nn.Module
    assert "test_user.py:11 in test_nan_in_backward" in out


def test_per_op_names_the_producing_op(tmp_path):
    pytest.importorskip("torch")
    proc = pytest_run(tmp_path, "--stabcheck-trap", "--stabcheck-trap-per-op", "-k", "nan_in_backward")
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "stabcheck: NaN/Inf trap on (per op)" in proc.stdout
    assert "aten.log.default produced -Inf in forward" in proc.stdout
