"""The example programs of benchmarks/programs/ (word LM, MNIST, L-BFGS style transfer and fit), a few
steps each, in-process: healthy under the trap in both modes, and printing exactly what they print
without it (the trap changes no value and draws no random number)."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys

import pytest
from script_runs import ROOT

torch = pytest.importorskip("torch")

import stabcheck  # noqa: E402

PROGRAMS = {
    "word_language_model.py": ["--steps", "4", "--log-interval", "2", "--emsize", "32", "--bptt", "10"],
    "mnist_classifier.py": ["--train-size", "128", "--test-size", "64", "--batch-size", "32", "--log-interval", "2"],
    "style_transfer_lbfgs.py": ["--steps", "10", "--size", "32"],
    "lbfgs_regression.py": ["--steps", "2", "--max-iter", "4", "--batch-size", "64", "--width", "32"],
}


def _run(name: str) -> str:
    path = ROOT / "benchmarks" / "programs" / name
    out, argv = io.StringIO(), sys.argv
    sys.argv = [str(path), *PROGRAMS[name]]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_is_healthy_and_unchanged_under_the_trap(name):
    plain = _run(name)
    assert plain and not re.search(r"\b(nan|inf)\b", plain)
    for per_op in (False, True):
        with stabcheck.trap(quiet=True, per_op=per_op) as trap:
            trapped = _run(name)
        assert trap.incidents == 0
        assert trapped == plain, f"per_op={per_op}"
