"""NumPy adapter of the runtime trap: floating-point error callbacks.

NumPy already detects every non-finite result of its ufuncs at no cost
(`divide by zero`, `invalid value`, `overflow`), and normally prints a
RuntimeWarning. The trap asks for a callback instead (`np.seterrcall`) and, when
the innermost frame is the user's, reports the ufunc and the line; a library's
floating-point error keeps its usual warning. Code under `np.errstate(...)`
that silences an error keeps it silent. The settings are restored on exit.
"""

from __future__ import annotations

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

# ufunc named on the line -> (neutral op for hints.py, kind its error makes), per error
_UFUNCS = {
    "log": "log", "log2": "log2", "log10": "log10", "log1p": "log1p", "divide": "div", "true_divide": "div",
    "reciprocal": "reciprocal", "sqrt": "sqrt", "power": "pow", "exp": "exp", "expm1": "expm1",
    "arccos": "acos", "arcsin": "asin", "arctanh": "atanh",
}
_CALL = re.compile(r"\b(?:np|numpy)\.(\w+)\s*\(")
_ERROR_KIND = {"divide by zero": "+inf", "overflow": "+inf", "invalid value": "nan"}

_is_library = frames.is_library


def _ufunc_on(line: str, error: str) -> str | None:
    """The ufunc the user's line most likely ran: the one call there that can make this error."""
    names = [n for n in _CALL.findall(line) if n in _UFUNCS]
    if error == "divide by zero":
        names = [n for n in names if _UFUNCS[n] in ("log", "log2", "log10", "div", "reciprocal", "log1p")] or (
            ["divide"] if "/" in line else [])
    elif error == "overflow":
        names = [n for n in names if _UFUNCS[n] in ("exp", "expm1", "pow")] or names
    return names[0] if len(names) == 1 or (names and len(set(names)) == 1) else None


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
        np.seterrcall(self._on_error)
        np.seterr(divide="call", over="call", invalid="call")

    def uninstall(self) -> None:
        if self.saved is not None:
            settings, call = self.saved
            self.saved = None
            np.seterr(**settings)
            np.seterrcall(call)

    def final_check(self) -> None:
        pass

    def _on_error(self, error: str, flag: int) -> None:
        caller = sys._getframe(1)
        while caller is not None and caller.f_code.co_filename.startswith(_NUMPY_DIR):
            caller = caller.f_back  # np.mean and friends run their ufuncs from numpy's own Python code
        if caller is None or self.muted or _is_library(caller.f_code.co_filename):
            self._warn(error)  # another library's floating-point error: its usual warning
            return
        location = frames.location(caller)
        ufunc = _ufunc_on(linecache.getline(location.filename, location.line), error)
        neutral = _UFUNCS.get(ufunc or "")
        kind = "-inf" if error == "divide by zero" and neutral and neutral.startswith("log") else _ERROR_KIND.get(
            error, "nan")
        detected = {"at": "op", "message": f"NumPy: {error} encountered", "location": vars(location)}
        finding = Finding("forward", f"numpy.{ufunc}" if ufunc else f"numpy ({error})", kind, location,
                          localized="per-op")
        self.emit(self.stamp(self.localized_report(detected, finding, neutral), None))

    @staticmethod
    def _warn(error: str) -> None:
        warnings.warn(f"{error} encountered", RuntimeWarning, stacklevel=3)


SLOT = TrapSlot(NumpyTrap)  # the active NumpyTrap
activate, deactivate = SLOT.activate, SLOT.deactivate
