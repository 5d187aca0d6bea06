"""pytest plugin: `pytest --stabcheck-trap` runs each test under the runtime
NaN/Inf trap (`stabcheck.trap()`, PyTorch) and fails the test with the trap's
report when one fires.

Registered through the `pytest11` entry point, so pytest loads it in every
run of an environment where stabcheck is installed: this module imports
nothing but pytest, and without the flag it only adds the option. Disable it
altogether with `-p no:stabcheck`.
"""

from __future__ import annotations

import io

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("stabcheck", "numerical-stability trap")
    group.addoption("--stabcheck-trap", action="store_true", default=False,
                    help="run each test under stabcheck's NaN/Inf trap (PyTorch); a trapped test fails with the report")
    group.addoption("--stabcheck-trap-per-op", action="store_true", default=False,
                    help="with --stabcheck-trap: check every op's output, not only losses, gradients and steps")


def pytest_configure(config) -> None:
    if config.getoption("stabcheck_trap", default=False):
        config.pluginmanager.register(_Trap(per_op=config.getoption("stabcheck_trap_per_op")), "stabcheck-trap")


def _report_text(report) -> str:
    from dataclasses import replace

    from stabcheck.runtime.report import render

    # The trap's hints name `stabcheck run`'s flag; here the flag is ours.
    report = replace(report, hint=report.hint.replace("--per-op", "--stabcheck-trap-per-op"))
    out = io.StringIO()
    render(report, out)
    return out.getvalue()


class _Trap:
    def __init__(self, per_op: bool):
        self.per_op = per_op
        self.torch = None

    def _has_torch(self) -> bool:
        if self.torch is None:
            try:
                import torch  # noqa: F401

                self.torch = True
            except ImportError:
                self.torch = False
        return self.torch

    def pytest_report_header(self, config):
        return "stabcheck: NaN/Inf trap on" + (" (per op)" if self.per_op else "")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        if not self._has_torch():  # the trap is PyTorch's; nothing to watch
            return (yield)
        from stabcheck.runtime import NonFiniteError, api

        before = api.last_stopped()
        trapped = None
        try:
            with api.trap(quiet=True, per_op=self.per_op):
                result = yield
        except NonFiniteError as exc:
            trapped = exc.report
        stopped = api.last_stopped()
        if trapped is None and stopped is not None and stopped is not before:
            trapped = stopped  # the test caught the trap's error itself
        if trapped is not None:
            pytest.fail(f"stabcheck trapped a non-finite value\n{_report_text(trapped)}", pytrace=False)
        return result
