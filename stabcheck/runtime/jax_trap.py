"""JAX adapter of the runtime trap: `jax_debug_nans` detects, stabcheck localizes.

With `jax_debug_nans` on, JAX checks the outputs of every jitted call (and of
every op run eagerly) for NaN as they come back; it also keeps jit from
donating buffers, so the arguments of a failing call are still there. The
trap turns that on and takes JAX's two checking functions (`check_special`,
`check_special_array` in jax._src.dispatch): a NaN then comes to the trap
instead of raising JAX's FloatingPointError. A jitted call is re-evaluated
primitive by primitive (jax_localize.py) to name the op that made the value,
at the user's line, forward or backward; an op run eagerly is the producer
itself. The report goes through the shared sink (incident.py): printed,
written, and the run stopped, or with `--action warn` the call returns its
NaN and the run goes on (one report per producer).

Inf is not checked (`jax_debug_infs` would fire on every `-inf` mask): an
+-inf matters once it becomes a NaN (0 * -inf, -inf - -inf, its gradient),
and is then reported at the op that made the inf.

A script that sets `jax_debug_nans` or `jax_debug_infs` itself (also through
the environment) keeps JAX's own behaviour: its FloatingPointError.
"""

from __future__ import annotations

import os
import sys
import threading

import jax
import numpy as np
from jax._src import dispatch, source_info_util

from stabcheck.runtime import frames, hints
from stabcheck.runtime.config import NonFiniteError, TrapConfig
from stabcheck.runtime.incident import Finding, IncidentSink, TrapSlot
from stabcheck.runtime.jax_localize import NOT_REPRODUCED, Input, Producer, localize, neutral, user_where
from stabcheck.runtime.numerics import array_stats
from stabcheck.runtime.report import Location, TrapReport

_OWN_FLAGS = ("jax_debug_nans", "jax_debug_infs")
# JAX's functions that call the output check, with the locals that name the call: the C++ jit's
# post-hook (every call after the first) and the Python path (a first call)
_CALLERS = ("_nan_check_posthook", "_run_python_pjit")
_JAX_DIR = frames.package_dir("jax") or ""


def _has_nan(buf) -> bool:
    return bool(np.isnan(np.asarray(buf)).any())


def _nan_in(value) -> bool:
    """An argument of an op (an array, or a Python number) holds a NaN."""
    try:
        a = np.asarray(value)
    except Exception:  # noqa: BLE001 - a key array, a token: no number
        return False
    return np.issubdtype(a.dtype, np.inexact) and bool(np.isnan(a).any())


def _stats(x) -> dict:
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return {"value": float(x) if isinstance(x, (int, float)) else repr(x)}
    device = "cpu"
    if isinstance(x, jax.Array):
        device = next(iter(x.devices())).platform
    a = np.asarray(x)
    return array_stats(a, str(a.dtype), device)


class JaxTrap(IncidentSink):
    framework = "jax"

    def __init__(self, config: TrapConfig):
        self.config = config
        self.muted = False
        self.incidents = 0
        self.first_report: TrapReport | None = None
        self.stopped: TrapReport | None = None
        self.user_owned = False  # the script set jax_debug_nans/infs itself
        self._saved = None
        self._local = threading.local()
        self._intentional: set = set()  # jitted functions whose NaN comes from a constant
        self._reported: set = set()

    # -- install ----------------------------------------------------------------

    def install(self) -> None:
        config = jax.config
        if (config.jax_debug_nans or config.jax_debug_infs
                or any(os.environ.get(flag.upper()) for flag in _OWN_FLAGS)):
            self.user_owned = True  # set before the script even started: JAX's own checks stay
            return
        self._saved = (dispatch.check_special, dispatch.check_special_array, config.update)
        original_update = config.update

        def update(name, value, *args, **kwargs):
            if name in _OWN_FLAGS:
                self.user_owned = True
            return original_update(name, value, *args, **kwargs)

        dispatch.check_special = self._check_special
        dispatch.check_special_array = self._check_special_array
        config.update = update
        original_update("jax_debug_nans", True)

    def uninstall(self) -> None:
        if self._saved is None:
            return
        dispatch.check_special, dispatch.check_special_array, _ = self._saved
        self._saved = None
        del jax.config.update  # the instance attribute: the method shows through again
        if not self.user_owned:
            jax.config.update("jax_debug_nans", False)

    def final_check(self) -> None:
        pass

    # -- JAX's checks, taken over ----------------------------------------------

    def _passthrough(self) -> bool:
        return self.user_owned or getattr(self._local, "busy", False)

    def _check_special(self, name, bufs) -> None:
        if self._passthrough():
            return self._saved[0](name, bufs)
        for buf in bufs:
            if jax.dtypes.issubdtype(buf.dtype, np.inexact) and _has_nan(buf):
                self._incident()
                return None
        return None

    def _check_special_array(self, name, arr):
        if self._passthrough():
            return self._saved[1](name, arr)
        if jax.dtypes.issubdtype(arr.dtype, np.inexact) and any(_has_nan(buf) for buf in arr._arrays):
            self._incident()
        return arr

    # -- an incident ------------------------------------------------------------

    def _incident(self) -> None:
        self._local.busy = True
        try:
            self._localize(sys._getframe(2))
        finally:
            self._local.busy = False

    def _localize(self, frame) -> None:
        if self.stopped is not None:  # the script caught the trap's error and went on: stop it again
            raise NonFiniteError(f"stabcheck: {self.stopped.headline()}", self.stopped)
        detected_at = frames.location(frames.user_frame(frame, frames.is_library))
        call = None
        while frame is not None and call is None:
            if frame.f_code.co_name in _CALLERS and frame.f_code.co_filename.startswith(_JAX_DIR):
                f_locals = frame.f_locals
                call = (f_locals.get("fun"), f_locals.get("args", ()), f_locals.get("kwargs") or {})
            frame = frame.f_back
        del frame
        if call is None or call[0] is None:  # a check JAX runs elsewhere (shard_map, scipy's ndtri)
            return self._unlocalized(detected_at, "NaN in a result JAX checked", "the call was not found")
        fun, args, kwargs = call
        # the function under the jit: `_fun` on JAX's Python path, `__wrapped__` on the C++ jit's
        # post-hook (an eager op's second call comes that way too)
        inner = getattr(fun, "_fun", None) or getattr(fun, "__wrapped__", fun)
        if getattr(inner, "_apply_primitive", False):
            return self._eager(inner, args, detected_at)
        return self._jitted(fun, inner, args, kwargs, detected_at)

    def _eager(self, primitive_fun, args, detected_at) -> None:
        """An op run eagerly made the NaN: it is the producer (unless its input already had one)."""
        if any(_nan_in(a) for a in args):
            return None  # the NaN came in from outside JAX (data, a literal): not made by this op
        with jax.debug_nans(False):  # a jit of its own: JAX refuses to re-enter the one that is running
            outputs = jax.jit(lambda *xs: primitive_fun(*xs))(*args)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        info = source_info_util.current()  # inside jax.grad's backward pass: the forward op's line
        phase = "backward" if "transpose" in str(info.name_stack) else "forward"
        producer = Producer(primitive_fun.__qualname__, "nan", phase, user_where(info.traceback),
                            inputs=list(args), outputs=outputs)
        detected = {"at": "op", "message": f"jax_debug_nans: {producer.primitive} returned NaN",
                    "location": vars(detected_at) if detected_at else None}
        # the backward of a linear op (0 * an inf made earlier): the op names no cause, the phase does
        hint_op = None if phase == "backward" else neutral(producer.primitive)
        self._report(producer, detected, detected_at, "per-op", hint_op)

    def _jitted(self, fun, inner, args, kwargs, detected_at) -> None:
        key = id(inner)
        if key in self._intentional:
            return None
        name = getattr(inner, "__qualname__", getattr(inner, "__name__", "?"))
        detected = {"at": "jit", "message": f"jax_debug_nans: the output of jit({name}) contains NaN",
                    "location": vars(detected_at) if detected_at else None}
        try:
            origin = localize(fun, args, kwargs)
        except Exception as exc:  # a function that cannot be traced again (side effects, odd arguments)
            return self._unlocalized(detected_at, detected["message"], f"re-evaluation failed ({type(exc).__name__})")
        if origin == NOT_REPRODUCED:
            return self._unlocalized(detected_at, detected["message"],
                                     "evaluating it primitive by primitive gave no NaN (a compiled fusion?)")
        if origin is None:
            if getattr(inner, "__code__", None) is None:
                # a jit with no Python function of its own (one JAX builds around eager values while
                # differentiating) that only passes on a NaN made before it: made by eager code
                return self._unlocalized(detected_at, "NaN in a value computed eagerly",
                                         "made before the jitted call that passed it on", EAGER_HINT)
            self._intentional.add(key)  # a NaN written on purpose (a constant): JAX's check is too strict
            return None
        if isinstance(origin, Input):
            code = getattr(inner, "__code__", None)
            if self.incidents or code is None or frames.is_library(code.co_filename):
                # passed on from an earlier incident (--action warn), or into JAX's own jitted helpers
                # (`x.at[i].set(jnp.nan)`): only the user's own jitted function names bad data
                return None
            report = TrapReport(phase="input", kind="nan", location=detected_at, hint=hints.INPUT_HINT, detected=dict(
                detected, message=f"{detected['message']}; {origin.path} already contains NaN"),
                localized="replay", framework=self.framework)
            return self.emit(self.stamp(report, None))
        self._report(origin, detected, detected_at, "replay", neutral(origin.primitive))

    def _report(self, producer: Producer, detected: dict, detected_at, localized: str, hint_op) -> None:
        seen = (producer.primitive, producer.where, producer.phase)
        if seen in self._reported:
            return None  # the same producer again (--action warn): one report per incident
        self._reported.add(seen)
        location = Location(*producer.where) if producer.where else detected_at
        forward = None
        if producer.phase == "backward" and producer.forward_op:
            forward = {"op": neutral(producer.forward_op), "node": f"{producer.primitive} in its derivative",
                       "location": vars(location) if location else None}
        finding = Finding(producer.phase, producer.primitive, producer.kind, location, forward=forward,
                          inputs=[_stats(x) for x in producer.inputs],
                          outputs=[_stats(x) for x in producer.outputs], localized=localized)
        self.emit(self.stamp(self.localized_report(detected, finding, hint_op), None))

    def _unlocalized(self, detected_at, message: str, note: str, hint: str = "") -> None:
        if self.incidents:
            return None
        detected = {"at": "jit", "message": message, "location": vars(detected_at) if detected_at else None}
        self.emit(self.stamp(self.unlocalized_report(detected, "nan", note, hint), None))


EAGER_HINT = ("the value was computed eagerly while JAX differentiated it, and JAX checked it only where a jit it "
              "built passed it on: the line is the first place it was seen; wrap the loss in jax.jit to have the "
              "op named")


SLOT = TrapSlot(JaxTrap)  # the active JaxTrap
activate, deactivate = SLOT.activate, SLOT.deactivate
