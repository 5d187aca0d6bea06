"""Activation of the TensorFlow trap, without importing TensorFlow.

`stabcheck run` and `stabcheck.trap()` call into this module; the adapter
(`tf_trap`, which imports TensorFlow) is loaded only once the user's code has
imported TensorFlow, directly or through Keras on the TensorFlow backend: now
if it already has, else from an import hook right after `import tensorflow`
finishes. Nested activations reuse the outermost trap.
"""

from __future__ import annotations

import sys
import threading

from stabcheck.runtime.config import TrapConfig
from stabcheck.runtime.import_hook import AfterImport

_lock = threading.RLock()
_trap = None  # the active TFTrap
_depth = 0
_pending: TrapConfig | None = None  # activate with this config once TensorFlow is imported
_last_stopped = None


def tf_loaded() -> bool:
    module = sys.modules.get("tensorflow")
    return module is not None and hasattr(module, "GradientTape")


def current():
    """The active TFTrap, or None."""
    return _trap


def last_stopped():
    """The report of the last TensorFlow trap that stopped its run (None if none did)."""
    return _last_stopped


def _on_import() -> None:
    """`import tensorflow` just finished: activate the pending trap."""
    _remove_hook()
    with _lock:
        config = _pending
        if config is not None and _trap is None:
            _activate(config)


_hook: AfterImport | None = None


def _remove_hook() -> None:
    global _hook
    if _hook is not None:
        _hook.remove()
        _hook = None


def _activate(config: TrapConfig) -> None:
    global _trap, _depth
    from stabcheck.runtime import tf_trap

    _trap = tf_trap.activate(config)
    _depth = max(_depth, 1)


def _deactivate(final_check: bool = True) -> None:
    global _trap, _last_stopped, _depth
    trap = _trap
    _depth = 0
    if trap is None:
        return
    _trap = None
    trap.uninstall()
    _last_stopped = trap.stopped


def enter(config: TrapConfig) -> bool:
    """Start (or nest in) a TensorFlow trap: now if TensorFlow is imported, else when it is.
    True when this call owns the trap (and must `exit()` it)."""
    global _pending, _hook, _depth
    with _lock:
        if _trap is not None or _pending is not None:
            _depth += 1
            return False
        _pending = config
        _depth = 1
        if tf_loaded():
            _activate(config)
        elif _hook is None:
            _hook = AfterImport("tensorflow", _on_import).install()
        return True


def exit(owner: bool, final_check: bool = True) -> None:  # noqa: A001 - pairs with enter()
    global _pending, _depth
    with _lock:
        if not owner:
            _depth = max(_depth - 1, 0)
            return
        _pending = None
        _remove_hook()
        _deactivate(final_check)


def start(config: TrapConfig) -> None:
    """`stabcheck run`: activate for the whole run (idempotent)."""
    with _lock:
        if _trap is None and _pending is None:
            enter(config)


def stop(final_check: bool = True) -> None:
    global _pending
    with _lock:
        _pending = None
        _remove_hook()
        _deactivate(final_check)
