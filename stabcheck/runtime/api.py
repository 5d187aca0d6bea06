"""`stabcheck.trap()`: the runtime trap as a context manager or decorator.

    with stabcheck.trap():                 # stop at the first NaN/Inf
        train()

    @stabcheck.trap(action="warn", report_json="nan.json")
    def train(): ...

On exit every global it changed is restored: `nn.Module.__call__`,
`torch.autograd.backward`, the optimizer step hooks, the torch function and
dispatch mode stacks, anomaly mode, the RNG state and module buffers touched by
a replay. Nested traps reuse the outermost one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading

from stabcheck.runtime.config import TrapConfig
from stabcheck.runtime.import_hook import AfterImport

_lock = threading.RLock()
_depth = 0
_trap = None  # the active TorchTrap
_last_stopped = None  # the report of the last trap that stopped its run


def _install(config: TrapConfig):
    global _trap
    from stabcheck.runtime import torch_trap

    _trap = torch_trap.activate(config)
    return _trap


def _uninstall(final_check: bool = True) -> None:
    global _trap, _last_stopped
    trap = _trap
    if trap is None:
        return
    try:
        if final_check and trap.stopped is None:
            trap.final_check()
    finally:
        _trap = None
        trap.uninstall()
        _last_stopped = trap.stopped


def last_stopped():
    """The report of the last trap that stopped its run (None if none did)."""
    if _last_stopped is None:
        from stabcheck.runtime import jax_api, numpy_api, tf_api

        return tf_api.last_stopped() or jax_api.last_stopped() or numpy_api.last_stopped()
    return _last_stopped


def current():
    """The active TorchTrap, or None."""
    return _trap


class trap(contextlib.ContextDecorator):
    """Trap the first NaN/Inf in PyTorch code run inside this block.

    action: "stop" (default) raises `stabcheck.runtime.NonFiniteError` (a
    FloatingPointError) after printing the report; "warn" reports and goes on.
    report_json: also write the report there. per_op: check every op's output
    (deferred device-side flags, one host sync per step). quiet: no panel on
    stderr. on_report: called with each `TrapReport` while this block runs
    (warn mode: every incident), before a stop raises.
    """

    def __init__(self, action: str = "stop", report_json: str | None = None, per_op: bool = False,
                 quiet: bool = False, on_report=None):
        self.config = TrapConfig(action=action, report_json=report_json, per_op=per_op, quiet=quiet)
        self.on_report = on_report
        self._owner = False

    def __enter__(self):
        global _depth
        with _lock:
            from stabcheck.runtime import incident, jax_api, numpy_api, tf_api

            if self.on_report is not None:
                incident.listeners.append(self.on_report)
            # TensorFlow code: trapped now if TensorFlow is imported, else as soon as it is
            self._tf_owner = tf_api.enter(self.config)
            self._jax_owner = jax_api.enter(self.config)  # JAX: the same
            self._np_owner = numpy_api.enter(self.config)  # NumPy's floating-point errors
            # TF-only or JAX-only code skips torch
            self._torch = not ((tf_api.tf_loaded() or jax_api.jax_loaded()) and "torch" not in sys.modules)
            if self._torch:
                try:
                    # importing torch may start a pending `stabcheck run` trap (then this one nests in it)
                    import torch  # noqa: F401
                except ImportError:
                    self._torch = False
            if not self._torch:
                return tf_api.current() or jax_api.current()
            _depth += 1
            if _trap is None:
                try:
                    _install(self.config)
                except BaseException:
                    _depth -= 1
                    self._unlisten()
                    raise
                self._owner = True
        return _trap

    def __exit__(self, exc_type, exc, tb):
        try:
            return self._exit(exc_type)
        finally:
            self._unlisten()  # after the final check, which may report too

    def _exit(self, exc_type):
        global _depth
        with _lock:
            from stabcheck.runtime import jax_api, numpy_api, tf_api

            numpy_api.exit(getattr(self, "_np_owner", False))
            self._np_owner = False
            jax_api.exit(getattr(self, "_jax_owner", False))
            self._jax_owner = False
            tf_owner, self._tf_owner = getattr(self, "_tf_owner", False), False
            tf_api.exit(tf_owner, final_check=exc_type is None)
            if not getattr(self, "_torch", True):
                return False
            _depth -= 1
            if _depth == 0 and self._owner:
                self._owner = False
                # an exception already on its way out (the trap's own included) skips the final check
                _uninstall(final_check=exc_type is None)
        return False

    def _unlisten(self) -> None:
        from stabcheck.runtime import incident

        if self.on_report in incident.listeners:
            incident.listeners.remove(self.on_report)

    @classmethod
    def from_config(cls, config: TrapConfig, on_report=None) -> "trap":
        fresh = cls(on_report=on_report)
        fresh.config = dataclasses.replace(config)
        return fresh

    def _recreate_cm(self):  # a fresh context per decorated call
        return trap.from_config(self.config, self.on_report)


# -- `stabcheck run`: install when the script imports torch --------------------

_hook: AfterImport | None = None


def start(config: TrapConfig) -> None:
    """Activate the trap now if torch is imported, else as soon as it is."""
    global _hook, _depth
    with _lock:
        from stabcheck.runtime import jax_api, numpy_api, tf_api

        tf_api.start(config)  # TensorFlow/Keras: the same, for `import tensorflow`
        jax_api.enter(config)  # JAX: jax_debug_nans, localized by stabcheck
        numpy_api.enter(config, wait_for_import=True)  # NumPy: floating-point error callbacks
        if _trap is not None:
            return
        if "torch" in sys.modules and hasattr(sys.modules["torch"], "nn"):
            _depth += 1
            _install(config)
        elif _hook is None:
            _hook = AfterImport("torch", lambda: start(config)).install()


def stop(final_check: bool = True) -> None:
    global _hook, _depth
    with _lock:
        from stabcheck.runtime import jax_api, numpy_api, tf_api

        tf_api.stop(final_check)
        jax_api.exit()
        numpy_api.exit()
        if _hook is not None:
            _hook.remove()
            _hook = None
        if _trap is not None:
            _depth = 0
            _uninstall(final_check)


def process_startup() -> None:
    """Entry point for spawned children: activate from STABCHECK_RUNTIME, if set."""
    config = TrapConfig.from_env()
    if config is not None:
        if config.report_json and "RANK" not in os.environ:  # one file per child, never the parent's
            root, ext = os.path.splitext(config.report_json)
            config.report_json = f"{root}.pid{os.getpid()}{ext}"
        start(config)
