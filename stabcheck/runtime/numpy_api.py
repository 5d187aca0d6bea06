"""Activation of the NumPy trap (numpy_trap.py) without importing NumPy: now if the program has
imported it, else right after it does (`stabcheck run` only). Nested activations reuse the first."""

from __future__ import annotations

import sys
import threading

from stabcheck.runtime.config import TrapConfig
from stabcheck.runtime.import_hook import AfterImport

_lock = threading.RLock()
_hook: AfterImport | None = None
_last_stopped = None


def _active():
    module = sys.modules.get("stabcheck.runtime.numpy_trap")
    return module.SLOT.trap if module is not None else None


def enter(config: TrapConfig, wait_for_import: bool = False) -> bool:
    """Trap NumPy's floating-point errors; True if this call activated the trap (it owns it)."""
    global _hook
    with _lock:
        if _active() is not None:
            return False
        if "numpy" in sys.modules:
            from stabcheck.runtime import numpy_trap

            numpy_trap.activate(config)
            return True
        if wait_for_import and _hook is None:
            _hook = AfterImport("numpy", lambda: enter(config)).install()
        return False


def exit(owner: bool = True) -> None:
    global _hook, _last_stopped
    with _lock:
        if _hook is not None:
            _hook.remove()
            _hook = None
        if owner and _active() is not None:
            from stabcheck.runtime import numpy_trap

            trap = numpy_trap.deactivate()
            _last_stopped = trap.stopped if trap is not None else None


def last_stopped():
    """The report of the last NumPy trap that stopped its run (None if none did)."""
    return _last_stopped
