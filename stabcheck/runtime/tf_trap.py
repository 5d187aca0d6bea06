"""TensorFlow / Keras adapter of the runtime trap (imported only once TensorFlow is).

Two tiers, like the PyTorch adapter (measurements in
benchmarks/runtime_overhead_tf.py and the README):

* **Detect (always on, cheap)** at the one place a training step cannot avoid:
  `tf.GradientTape.gradient` (custom loops, and Keras `train_step` under
  `fit` / `train_on_batch`). The loss and the gradients are checked:
  - eagerly: one fp32 sum per tensor, one host read per call (exact re-check on
    the rare non-finite sum, so an overflowing sum of finite values is not a
    finding);
  - while a `tf.function` is traced: the same sums become graph ops and a
    `tf.cond` whose false branch only (never taken on a healthy step) calls a
    `tf.py_function` that re-checks exactly and saves the step's inputs and the
    variables' pre-update values. The gradients are passed on through
    `tf.identity` under a control dependency on that check, so the optimizer
    update never runs before it: with the default action the step is aborted
    and the weights are as they were before the step. Functions traced before
    the trap was on are retraced on their first call under it (and retraced
    again without the checks when the trap goes).
* **Localize (on detection; tf_localize.py).** Eager code: while a tape records, an op callback
  keeps references (no copies) to each op's inputs and outputs and the user's
  line; on detection they are scanned for the first op whose inputs are finite
  (NaN-free for a NaN) and whose output is not. `tf.function` / `fit`: the
  failing traced function is replayed eagerly (`run_functions_eagerly`) from
  the saved inputs and variable values, with every op recorded the same way,
  forward and backward, up to the failing `gradient()` call (the update never
  runs in the replay); variables are restored after. Intentional -inf (masks
  built with `tf.where`, `fill`, additive -inf biases) is never a producer:
  only an op with finite inputs that outputs +-inf, or NaN-free inputs that
  output NaN, is.

Shared helpers (frames, tensor statistics, op tables) live in tf_support.py.
"""

from __future__ import annotations

import math
import os
import sys
import weakref

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import backprop, context
from tensorflow.python.eager.polymorphic_function import polymorphic_function as _pf
from tensorflow.python.framework import op_callbacks, ops
from tensorflow.python.util import nest

from stabcheck.runtime.config import NonFiniteError, TrapConfig
from stabcheck.runtime.incident import Finding, IncidentSink, kind_in
from stabcheck.runtime.numerics import kind_of_array
from stabcheck.runtime import keras_logs
from stabcheck.runtime.report import TrapReport
from stabcheck.runtime.tf_localize import Localizer, Site, Stash, data_in, scan, signature_of
from stabcheck.runtime.tf_support import (ORIG_GRADIENT as _ORIG_GRADIENT, all_finite_np, as_np, clear_traces,
                                          tensor_stats,
                                          float_leaves, keras_module, loss_scaled, neutral, pass_through,
                                          reset_library_dirs, sum32, tf_variable, user_where, user_where_traced)

MAX_RECORDS = 20000  # eager ops recorded per step; beyond this the step is not localized

_ORIG_ENTER = backprop.GradientTape.__enter__
_ORIG_EXIT = backprop.GradientTape.__exit__
_ORIG_FN_CALL = _pf.Function.__call__


# ---------------------------------------------------------------------------
# patched entry points

_ACTIVE: "TFTrap | None" = None


def _record_cb(op_type, inputs, attrs, outputs, op_name=None, graph=None):
    trap = _ACTIVE
    if graph is not None or trap is None or trap.busy or not trap.recording:
        return None
    records = trap.records
    if len(records) >= MAX_RECORDS:
        trap.overflowed = True
        return None
    frame = sys._getframe(1)
    extra = None
    if trap.replaying:
        extra = {"module": keras_module(frame)}
        if trap.phase == "backward":
            extra["forward"] = trap.forward_of(frame)
    records.append((op_type, inputs, outputs, user_where(frame), trap.phase, extra, attrs))
    return None


def _tape_enter(self):
    trap = _ACTIVE
    if trap is not None and not trap.busy and not trap.replaying and context.executing_eagerly():
        trap.tape_entered()
    return _ORIG_ENTER(self)


def _tape_exit(self, typ, value, traceback):
    try:
        return _ORIG_EXIT(self, typ, value, traceback)
    finally:
        trap = _ACTIVE
        if trap is not None and not trap.replaying and trap.tapes and context.executing_eagerly():
            trap.tape_exited()


def _tape_gradient(self, target, sources, *args, **kwargs):
    trap = _ACTIVE
    if trap is None or trap.busy:
        return _ORIG_GRADIENT(self, target, sources, *args, **kwargs)
    if trap.replaying:
        return trap.replay_gradient(self, target, sources, args, kwargs)
    if context.executing_eagerly():
        try:
            return trap.eager_gradient(self, target, sources, args, kwargs, sys._getframe(1))
        except NonFiniteError as exc:
            raise exc.with_traceback(None) from None  # the user's traceback, not the trap's internals
    return trap.graph_gradient(self, target, sources, args, kwargs, sys._getframe(1))


def _function_call(self, *args, **kwargs):
    trap = _ACTIVE
    if trap is None or trap.busy or trap.replaying:
        return _ORIG_FN_CALL(self, *args, **kwargs)
    try:
        return trap.call_function(self, args, kwargs)
    except NonFiniteError as exc:
        raise exc.with_traceback(None) from None  # the user's traceback, not the trap's internals



class TFTrap(Localizer, IncidentSink):
    framework = "tensorflow"

    def __init__(self, config: TrapConfig):
        self.config = config
        self.busy = 0
        self.records: list = []
        self.recording = False
        self.tapes = 0
        self.cb_added = False
        self.overflowed = False
        self.phase = "forward"
        self.replaying = False
        self.replay_grad_calls = 0
        self.replay_site: Site | None = None
        self.replay_error: str | None = None
        self.sites: list[Site] = []
        self.tracing: list = []  # (Function, ordinal counter dict) of the functions being traced
        self.prepared: "weakref.WeakSet" = weakref.WeakSet()
        self.traced_here: "weakref.WeakSet" = weakref.WeakSet()
        self.with_sites: "weakref.WeakSet" = weakref.WeakSet()
        self.keras_hooked = False  # Keras' CallbackList checks the logs (keras_logs.py), once Keras is loaded
        self.cascade = False  # a check of the running call saw a non-finite value while muted
        # the functions a gradient was traced into under XLA: unchecked and unreplayable, their outputs
        # are checked, and a report from Keras' logs says why the step went unchecked
        self.xla_functions: "weakref.WeakSet" = weakref.WeakSet()
        self.stash: Stash | None = None
        self.steps = 0
        self.muted = False
        self.incidents = 0
        self.first_report: TrapReport | None = None
        self.stopped: TrapReport | None = None
        self.installed = False
        self.on_stop: list = []

    # -- install / uninstall ------------------------------------------------
    def install(self) -> None:
        global _ACTIVE
        if _ACTIVE is not None:
            raise RuntimeError("a stabcheck TensorFlow trap is already active")
        reset_library_dirs()
        _ACTIVE = self
        backprop.GradientTape.__enter__ = _tape_enter
        backprop.GradientTape.__exit__ = _tape_exit
        backprop.GradientTape.gradient = _tape_gradient
        _pf.Function.__call__ = _function_call
        self.installed = True

    def uninstall(self) -> None:
        global _ACTIVE
        if not self.installed:
            return
        self.installed = False
        try:
            self._remove_cb()
            backprop.GradientTape.__enter__ = _ORIG_ENTER
            backprop.GradientTape.__exit__ = _ORIG_EXIT
            backprop.GradientTape.gradient = _ORIG_GRADIENT
            _pf.Function.__call__ = _ORIG_FN_CALL
            keras_logs.unhook()
            for fn in list(self.traced_here):  # retrace without the checks on the next call
                clear_traces(fn)
        finally:
            _ACTIVE = None
        self.records = []
        self.stash = None

    def final_check(self) -> None:
        pass

    @property
    def step(self) -> int:
        return self.steps

    # -- eager recording ----------------------------------------------------
    def _add_cb(self) -> None:
        if not self.cb_added:
            op_callbacks.add_op_callback(_record_cb)
            self.cb_added = True

    def _remove_cb(self) -> None:
        if self.cb_added:
            self.cb_added = False
            try:
                op_callbacks.remove_op_callback(_record_cb)
            except (KeyError, ValueError):
                pass

    def tape_entered(self) -> None:
        if self.tapes == 0:
            self.records = []
            self.overflowed = False
            self.phase = "forward"
        self.tapes += 1
        self.recording = True
        self._add_cb()

    def tape_exited(self) -> None:
        self.tapes -= 1
        if self.tapes <= 0:
            self.tapes = 0
            self.recording = False
            self._remove_cb()

    # -- detection: eager -----------------------------------------------------
    def eager_gradient(self, tape, target, sources, args, kwargs, frame):
        self.phase = "backward"
        try:
            grads = _ORIG_GRADIENT(tape, target, sources, *args, **kwargs)
        finally:
            self.phase = "forward"
        values = float_leaves(target) + ([] if loss_scaled(frame) else float_leaves(grads))
        self.busy += 1
        try:
            ok = self._finite_eager(values)
        finally:
            self.busy -= 1
        if ok:
            self.steps += 1
            self.muted = False
            if not self.tapes:
                self.records = []
            return grads
        if self.muted:  # the cascade of an incident already reported (--action warn)
            self.steps += 1
            self.records = [] if not self.tapes else self.records
            return grads
        where = user_where(frame)
        detected = self._detected(target, grads, sources, where)
        records, self.records = self.records, []
        finding = data_in(records) or (scan(records, "per-op") if not self.overflowed else None)
        if finding is None and records and not self.overflowed:
            self.busy += 1
            try:
                finding = self._backward_from_records(records, target, sources, args, kwargs)
            finally:
                self.busy -= 1
        self.trip(detected, finding, "per-op" if records and not self.overflowed else None)
        self.steps += 1  # --action warn: the step goes on
        if not self.tapes:
            self.recording = False
        return grads

    @staticmethod
    def _finite_eager(values) -> bool:
        if not values:
            return True
        sums = [sum32(v) for v in values]
        total = sums[0] if len(sums) == 1 else tf.add_n(sums)
        if math.isfinite(float(total)):
            return True
        return all_finite_np(values)  # exact: a sum of finite values may overflow

    def _detected(self, target, grads, sources, where, kind=None) -> dict:
        flat_t = float_leaves(target)
        bad_t = next((t for t in flat_t if not np.isfinite(as_np(t)).all()), None)
        if bad_t is not None:
            return {"at": "loss", "message": f"the loss passed to GradientTape.gradient() is {kind_of_array(as_np(bad_t))}",
                    "location": dict(zip(("filename", "line", "function"), where)) if where else None}
        name, what = "a source", kind or "non-finite"
        for src, g in zip(nest.flatten(sources), nest.flatten(grads)):
            if g is None:
                continue
            a = as_np(g.values if isinstance(g, tf.IndexedSlices) else g)
            if not np.isfinite(a).all():
                name, what = getattr(src, "path", None) or getattr(src, "name", None) or "a source", kind_of_array(a)
                break
        return {"at": "backward", "message": f"the gradient of {name} is {what}",
                "location": dict(zip(("filename", "line", "function"), where)) if where else None}

    # -- detection: traced into a tf.function ---------------------------------
    def graph_gradient(self, tape, target, sources, args, kwargs, frame):
        grads = _ORIG_GRADIENT(tape, target, sources, *args, **kwargs)
        graph = ops.get_default_graph()
        try:
            from tensorflow.python.ops import control_flow_util

            if control_flow_util.GraphOrParentsInXlaContext(graph):
                for fn, _ in self.tracing:
                    self.xla_functions.add(fn)
                return grads  # XLA cannot run py_function: only the boundary sees this step
        except Exception:  # pragma: no cover
            pass
        checked = float_leaves(target) + ([] if loss_scaled(frame) else float_leaves(grads))
        if not checked:
            return grads
        self.busy += 1
        try:
            fn_graph = graph
            while type(fn_graph).__name__ in ("CondBranchFuncGraph", "WhileCondFuncGraph", "WhileBodyFuncGraph") \
                    and getattr(fn_graph, "outer_graph", None) is not None:
                fn_graph = fn_graph.outer_graph
            function, counter = self.tracing[-1] if self.tracing else (None, {})
            ordinal = counter.get(id(fn_graph), 0)
            counter[id(fn_graph)] = ordinal + 1
            sig, nargs = signature_of(fn_graph)
            placeholders = list(fn_graph.inputs[:nargs]) if sig is not None else []
            variables = [v for v in map(tf_variable, nest.flatten(sources)) if v is not None]
            site = Site(len(self.sites), weakref.ref(function) if function is not None else None, sig, nargs,
                        user_where_traced(frame), ordinal, [weakref.ref(v) for v in variables],
                        sig is not None and function is not None)
            site.nchecked = len(checked)
            site.nsnap = len(variables)
            self.sites.append(site)
            for fn, _ in self.tracing:
                self.with_sites.add(fn)
            total = tf.add_n([sum32(t) for t in checked]) if len(checked) > 1 else sum32(checked[0])
            ok = tf.math.is_finite(total)
            index = site.index

            def healthy():
                return tf.constant(True)

            def failing():
                snap = [v.read_value() if hasattr(v, "read_value") else tf.identity(v) for v in variables]
                values = [t.values if isinstance(t, tf.IndexedSlices) else t for t in checked]
                return tf.py_function(lambda *xs: _on_nonfinite(index, xs), [*values, *placeholders, *snap],
                                      Tout=tf.bool)

            guard = tf.cond(ok, healthy, failing)
            with tf.control_dependencies([guard]):
                grads = pass_through(grads)
        finally:
            self.busy -= 1
        return grads

    def call_function(self, fn, args, kwargs):
        if not context.executing_eagerly():  # called while an outer function is traced
            self.tracing.append((fn, {}))
            try:
                return _ORIG_FN_CALL(fn, *args, **kwargs)
            finally:
                self.tracing.pop()
                self.traced_here.add(fn)
        if fn not in self.prepared:
            self.prepared.add(fn)
            if fn.experimental_get_tracing_count():
                clear_traces(fn)  # traced before the trap: retrace with the checks
        before = fn.experimental_get_tracing_count()
        depth = len(self.tracing)
        self.tracing.append((fn, {}))
        self.cascade = False
        try:
            result = _ORIG_FN_CALL(fn, *args, **kwargs)
        except tf.errors.OpError:
            _stderr_back()
            del self.tracing[depth:]
            stash, self.stash = self.stash, None
            if stash is None:
                raise
            self.incident(stash, fn)  # raises NonFiniteError unless --action warn
            raise
        finally:
            _stderr_back()
            del self.tracing[depth:]
        if fn.experimental_get_tracing_count() != before:
            self.traced_here.add(fn)
        stash, self.stash = self.stash, None
        if fn in self.with_sites:
            self.steps += 1
            if stash is None and not self.cascade:
                self.muted = False  # a healthy step: the next incident is reported again
        if stash is not None:  # --action warn: the step went on; report it now
            self.steps -= 1
            try:
                self.incident(stash, fn)
            finally:
                self.steps += 1
        elif not self.muted and not self.incidents and fn not in self.with_sites:
            xla = fn in self.xla_functions
            self._check_returned(fn, result, xla)
            self.steps += xla
        if not self.keras_hooked:
            self.keras_hooked = keras_logs.hook(self)
        return result

    def _check_returned(self, fn, result, xla: bool = False) -> None:
        """What a function with no gradient to check returns leaves the computation: a NaN there is
        reported (an inf may be a mask it returns on purpose). Keras' step functions return their
        logs (an Optional of them, per step): those are checked once per evaluation and epoch instead
        (keras_logs.py), at no cost per step."""
        if isinstance(result, (dict, tf.experimental.Optional)):
            return
        for path, value in nest.flatten_with_joined_string_paths(result):
            if isinstance(value, tf.Tensor) and value.dtype.is_floating \
                    and bool(tf.reduce_any(tf.math.is_nan(value))):  # on its device: one boolean comes back
                name = path.rsplit("/", 1)[-1] or "its output"
                self.report_returned(f"the output of {fn.__name__}() ({name}) is nan", "", None, tensor_stats(value),
                                     sys._getframe(2), trained=xla)
                return

    def report_returned(self, message: str, hint: str, mode: str | None, stats: dict | None, frame,
                        trained: bool = False) -> None:
        """A non-finite value no gradient saw: an evaluation's, a metric's, a function's output.
        `trained`: the training's own logs -- under XLA no gradient was checked, so they may hold
        the loss of a step that went wrong."""
        if self.muted or self.incidents:  # (after a report, the logs only echo it: --action warn)
            return
        where = user_where(frame)
        detected = {"at": "read", "message": message,
                    "location": dict(zip(("filename", "line", "function"), where)) if where else None}
        kind = kind_in(message)
        note = "no gradient computed it: not replayed"
        if trained and self.xla_functions:
            note, hint = "the training step is XLA-compiled: not checked, not replayed", XLA_HINT
        report = self.unlocalized_report(detected, kind, note, hint, [stats] if stats else [])
        report.mode = mode
        self.emit(self.stamp(report, self.steps))

    # -- localization by replay -----------------------------------------------
    # -- reporting ------------------------------------------------------------
    def trip(self, detected: dict, finding: Finding | None, how: str | None) -> None:
        if self.muted:
            return
        try:
            report = self._make_report(detected, finding, how)
        except Exception as exc:  # (a bug of the report's: the run is still stopped, with what was seen)
            report = self.stamp(self.fallback_report(detected, exc), self.steps)
        self.emit(report)

    def _make_report(self, detected: dict, finding: Finding | None, how: str | None) -> TrapReport:
        if finding is None:
            kind = kind_in(detected.get("message", ""))
            if how is None or self.overflowed:
                note, hint = "step could not be replayed", TF_UNREPLAYABLE_HINT
            else:
                note, hint = "replay did not reproduce", TF_UNLOCALIZED_HINT
            report = self.unlocalized_report(detected, kind, note, hint)
        else:
            report = self.localized_report(detected, finding, neutral(finding.op))
        return self.stamp(report, self.steps)

    record_cb = staticmethod(_record_cb)  # the op callback the replays (tf_localize) install


TF_UNREPLAYABLE_HINT = ("the step could not be replayed (a tf.function fed by an iterator or composite tensors, "
                        "an XLA-compiled step, or too many ops); call the step function with tensors, or "
                        "run it eagerly (tf.config.run_functions_eagerly(True)) to find the op")
XLA_HINT = ("the training step is compiled by XLA (model.compile(jit_compile=True), Keras' default on a GPU, or "
            "tf.function(jit_compile=True)), which runs no check the trap could add: the first sign is what the "
            "step returns (under fit, the epoch's logs). Compile with jit_compile=False for one run under "
            "stabcheck to have every step checked and the op named")
TF_UNLOCALIZED_HINT = ("the value became non-finite but replaying the step eagerly did not reproduce it (random "
                       "ops such as dropout, nondeterministic kernels, or state the replay cannot see)")


def _on_nonfinite(index: int, values) -> bool:
    """Runs (eagerly, in a TF thread) only when a traced check saw a non-finite sum."""
    trap = _ACTIVE
    if trap is None or index >= len(trap.sites):
        return True
    if trap.muted:  # the cascade of an incident already reported (--action warn): it stays muted
        trap.cascade = True
        return False
    site = trap.sites[index]
    arrays = [np.asarray(v.numpy()) for v in values]
    checked = arrays[: site.nchecked]
    if all(np.isfinite(a).all() for a in checked):
        return True  # a sum of finite values overflowed: not a finding
    kind = next((k for k in map(kind_of_array, checked) if k), "nan")
    args = arrays[site.nchecked: site.nchecked + site.nargs]
    snapshot = arrays[site.nchecked + site.nargs:]
    if trap.stash is None:
        trap.stash = Stash(site, checked, args, snapshot, kind)
    if trap.config.action == "stop":
        _stderr_off()  # TensorFlow logs the aborting error (a page of C++ log): not the user's concern
        raise FloatingPointError("stabcheck: non-finite loss or gradients; the step is stopped before the update")
    return False


_saved_stderr: int | None = None  # fd 2 while TensorFlow's log of an aborted step goes to /dev/null


def _stderr_off() -> None:
    global _saved_stderr
    if _saved_stderr is None:
        try:
            sys.stderr.flush()
            _saved_stderr = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            _saved_stderr = None


def _stderr_back() -> None:
    global _saved_stderr
    if _saved_stderr is not None:
        saved, _saved_stderr = _saved_stderr, None
        os.dup2(saved, 2)
        os.close(saved)


# ---------------------------------------------------------------------------
# module-level entry points used by tf_api.py


def activate(config: TrapConfig) -> TFTrap:
    trap = TFTrap(config)
    trap.install()
    return trap


def active() -> TFTrap | None:
    return _ACTIVE
