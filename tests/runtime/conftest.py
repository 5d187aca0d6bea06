"""Fixtures for the runtime-trap tests (helpers live in runtime_helpers.py)."""

from __future__ import annotations

import pytest
from runtime_helpers import stabcheck_run


@pytest.fixture
def run_trap(tmp_path):
    """Run `python -m stabcheck run --report-json TMP ...`; the parsed report comes back with the result."""

    def run(*args, **kwargs):
        return stabcheck_run(*args, tmp_path=tmp_path, **kwargs)

    return run
