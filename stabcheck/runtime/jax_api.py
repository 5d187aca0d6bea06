"""Activation of the JAX trap (jax_trap.py) without importing JAX: now if the program has imported
it, else right after it does. Nested activations reuse the first."""

from __future__ import annotations

import sys
import threading

from stabcheck.runtime.config import TrapConfig
from stabcheck.runtime.import_hook import AfterImport

_lock = threading.RLock()
_hook: AfterImport | None = None
_last_stopped = None
_fallback: list = []  # the jax module, while JAX's own check stands in for the trap (_activate)


def jax_loaded() -> bool:
    module = sys.modules.get("jax")
    return module is not None and hasattr(module, "jit")


def _active():
    module = sys.modules.get("stabcheck.runtime.jax_trap")
    return module.SLOT.trap if module is not None else None


def current():
    """The active JaxTrap, or None."""
    return _active()


def enter(config: TrapConfig) -> bool:
    """Trap NaN in JAX code now, or as soon as JAX is imported; True if this call owns the trap."""
    global _hook
    with _lock:
        if _active() is not None or _hook is not None:
            return False
        if jax_loaded():
            _activate(config)
        else:
            _hook = AfterImport("jax", lambda: _on_import(config)).install()
        return True


def _on_import(config: TrapConfig) -> None:
    global _hook
    with _lock:
        _hook = None
        if _active() is None:
            _activate(config)


def _activate(config: TrapConfig) -> None:
    """The trap takes over private JAX functions (tested with the version CI pins): a JAX whose
    internals differ gets JAX's own NaN check instead, and a line saying so, never a failed import."""
    try:
        from stabcheck.runtime import jax_trap

        jax_trap.activate(config)
    except Exception as exc:  # noqa: BLE001 - an unknown JAX: degrade, never break the user's import
        import jax

        print(f"stabcheck: the runtime trap does not support JAX {getattr(jax, '__version__', '?')} "
              f"({type(exc).__name__}: {exc}); using JAX's own jax_debug_nans instead", file=sys.stderr)
        if not jax.config.jax_debug_nans:
            jax.config.update("jax_debug_nans", True)
            _fallback.append(jax)  # turned off again when the trap exits


def exit(owner: bool = True) -> None:  # noqa: A001 - pairs with enter()
    global _hook, _last_stopped
    with _lock:
        if not owner:
            return
        if _hook is not None:
            _hook.remove()
            _hook = None
        while _fallback:
            _fallback.pop().config.update("jax_debug_nans", False)
        if _active() is not None:
            from stabcheck.runtime import jax_trap

            trap = jax_trap.deactivate()
            _last_stopped = trap.stopped if trap is not None else None


def last_stopped():
    """The report of the last JAX trap that stopped its run (None if none did)."""
    return _last_stopped
