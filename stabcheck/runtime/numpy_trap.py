"""NumPy adapter of the runtime trap: floating-point error callbacks.

NumPy already detects every non-finite result of its ufuncs at no cost
(`divide by zero`, `invalid value`, `overflow`), and normally prints a
RuntimeWarning. The trap asks for them as a log instead (`np.seterrcall` with
mode "log", whose message names the ufunc) and, when the innermost frame is
the user's, reports the ufunc and the line; a library's floating-point error,
and one inside a branch of `where` that discards it, keep their usual warning. Code under `np.errstate(...)`
that silences an error keeps it silent. The settings are restored on exit.
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import re
import sys
import warnings

import numpy as np

from stabcheck.runtime import frames
from stabcheck.runtime.config import TrapConfig
from stabcheck.runtime.incident import Finding, IncidentSink, TrapSlot
from stabcheck.runtime.report import TrapReport

_NUMPY_DIR = os.path.dirname(np.__file__) + os.sep

# NumPy's ufunc name (from its message "invalid value encountered in divide") -> neutral op for hints.py
_UFUNCS = {
    "log": "log", "log2": "log2", "log10": "log10", "log1p": "log1p", "divide": "div", "true_divide": "div",
    "floor_divide": "div", "reciprocal": "reciprocal", "sqrt": "sqrt", "power": "pow", "float_power": "pow",
    "exp": "exp", "exp2": "exp", "expm1": "expm1", "arccos": "acos", "arcsin": "asin", "arctanh": "atanh",
    "multiply": "mul", "matmul": "mm", "dot": "mm", "add": "add", "subtract": "sub", "square": "mul",
}
_MESSAGE = re.compile(r"(divide by zero|overflow|invalid value|underflow) encountered in (?:scalar )?(\w+)")
_ERROR_KIND = {"divide by zero": "+inf", "overflow": "+inf", "invalid value": "nan"}
# ufunc -> the Python operator that runs it (`a / b` runs divide)
_OPERATORS = {"divide": ast.Div, "true_divide": ast.Div, "floor_divide": ast.FloorDiv, "multiply": ast.Mult,
              "add": ast.Add, "subtract": ast.Sub, "power": ast.Pow, "matmul": ast.MatMult}

_is_library = frames.is_library


def _runs(node: ast.AST, ufunc: str, line: int) -> bool:
    """Does `node` (a where's branch) run `ufunc` on `line`?"""
    operator = _OPERATORS.get(ufunc)
    for sub in ast.walk(node):
        if getattr(sub, "lineno", None) != line and not (
                getattr(sub, "lineno", 0) <= line <= (getattr(sub, "end_lineno", None) or 0)):
            continue
        if operator is not None and isinstance(sub, ast.BinOp) and isinstance(sub.op, operator):
            return True
        if isinstance(sub, ast.Call):
            name = sub.func.attr if isinstance(sub.func, ast.Attribute) else getattr(sub.func, "id", None)
            if name == ufunc:
                return True
    return False


@functools.lru_cache(maxsize=256)
def _masked_by_where(filename: str, line: int, ufunc: str) -> bool:
    """Is the error on `line` raised inside a branch of `where(cond, a, b)`, which discards it
    (`np.where(support > 0, hits / support, 0.0)` computes 0 / 0 for the empty classes)?"""
    try:
        tree = ast.parse("".join(linecache.getlines(filename)))
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and len(node.args) == 3
                and node.lineno <= line <= (node.end_lineno or node.lineno)):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name == "where" and any(_runs(branch, ufunc, line) for branch in node.args[1:]):
            return True
    return False


class NumpyTrap(IncidentSink):
    framework = "numpy"

    def __init__(self, config: TrapConfig):
        self.config = config
        self.muted = False
        self.incidents = 0
        self.first_report: TrapReport | None = None
        self.stopped: TrapReport | None = None
        self.saved = None

    def install(self) -> None:
        self.saved = (np.geterr(), np.geterrcall())
        # "log" rather than "call": NumPy then names the ufunc ("... encountered in divide")
        np.seterrcall(self)
        np.seterr(divide="log", over="log", invalid="log")

    def uninstall(self) -> None:
        if self.saved is not None:
            settings, call = self.saved
            self.saved = None
            np.seterr(**settings)
            np.seterrcall(call)

    def final_check(self) -> None:
        pass

    def write(self, message: str) -> None:
        """NumPy's floating-point error log: "Warning: invalid value encountered in divide"."""
        match = _MESSAGE.search(message)
        error, ufunc = match.groups() if match else ("invalid value", "")
        caller = sys._getframe(1)
        while caller is not None and caller.f_code.co_filename.startswith(_NUMPY_DIR):
            caller = caller.f_back  # np.mean and friends run their ufuncs from numpy's own Python code
        if caller is None or self.muted or _is_library(caller.f_code.co_filename):
            self._warn(error, ufunc)  # another library's floating-point error: its usual warning
            return
        location = frames.location(caller)
        if _masked_by_where(location.filename, location.line, ufunc):
            self._warn(error, ufunc)  # the where keeps the value out, as the user meant
            return
        neutral = _UFUNCS.get(ufunc)
        kind = "-inf" if error == "divide by zero" and neutral and neutral.startswith("log") else _ERROR_KIND.get(
            error, "nan")
        detected = {"at": "op", "message": f"NumPy: {error} encountered in {ufunc}", "location": vars(location)}
        finding = Finding("forward", f"numpy.{ufunc}" if ufunc else f"numpy ({error})", kind, location,
                          localized="per-op")
        self.emit(self.stamp(self.localized_report(detected, finding, neutral), None))

    @staticmethod
    def _warn(error: str, ufunc: str) -> None:
        warnings.warn(f"{error} encountered in {ufunc}", RuntimeWarning, stacklevel=3)


SLOT = TrapSlot(NumpyTrap)  # the active NumpyTrap
activate, deactivate = SLOT.activate, SLOT.deactivate
