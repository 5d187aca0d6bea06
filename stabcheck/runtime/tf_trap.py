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
* **Localize (on detection).** Eager code: while a tape records, an op callback
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
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import backprop, context
from tensorflow.python.eager.polymorphic_function import polymorphic_function as _pf
from tensorflow.python.framework import op_callbacks, ops
from tensorflow.python.util import nest

import stabcheck
from stabcheck.runtime import hints
from stabcheck.runtime.config import NonFiniteError, TrapConfig
from stabcheck.runtime.incident import Finding, IncidentSink
from stabcheck.runtime.report import Location, TrapReport

_OWN_DIR = os.path.dirname(stabcheck.__file__) + os.sep


def _package_dirs() -> tuple[str, ...]:
    dirs = [os.path.dirname(tf.__file__) + os.sep]
    for name in ("keras", "tf_keras", "tensorflow_core", "optree", "tree", "absl", "wrapt", "numpy", "h5py"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        if path:
            dirs.append(os.path.dirname(path) + os.sep)
    return tuple(dirs)


_SKIP_FILES = ("contextlib.py", "functools.py", "threading.py")
MAX_RECORDS = 20000  # eager ops recorded per step; beyond this the step is not localized

_ORIG_GRADIENT = backprop.GradientTape.gradient
_ORIG_ENTER = backprop.GradientTape.__enter__
_ORIG_EXIT = backprop.GradientTape.__exit__
_ORIG_FN_CALL = _pf.Function.__call__

# op types that write +-inf from finite inputs on purpose (masks, padding, constants) or only move values
_INF_WRITERS = frozenset({
    "Fill", "Const", "SelectV2", "Select", "Where", "ZerosLike", "OnesLike", "BroadcastTo", "Pad", "PadV2",
    "MirrorPad", "ScatterNd", "TensorScatterUpdate", "TensorScatterAdd", "TensorScatterMin", "TensorScatterMax",
    "Identity", "IdentityN", "Reshape", "Transpose", "ConcatV2", "Pack", "Unpack", "StridedSlice", "Slice",
    "GatherV2", "GatherNd", "Tile", "ExpandDims", "Squeeze", "ReadVariableOp", "Snapshot", "Split", "SplitV",
    "Min", "Max", "Minimum", "Maximum", "MatrixBandPart", "MatrixSetDiag", "StopGradient", "Reverse",
    "ReverseV2", "OneHot", "Cast",
})
# ops that never produce a value from their inputs' values
_NOT_PRODUCERS = frozenset({"ReadVariableOp", "AssignVariableOp", "VarHandleOp", "Identity", "IdentityN",
                            "Snapshot", "StopGradient", "RandomStandardNormal", "RandomUniform",
                            "StatelessRandomUniformV2", "StatelessRandomNormalV2", "TruncatedNormal"})

# TF op type -> framework-neutral name used by the hint table (hints.py)
_NEUTRAL = {
    "Log": "log", "Log1p": "log1p", "Xlogy": "log", "Xlog1py": "log1p", "RealDiv": "div", "Div": "div",
    "DivNoNan": "div", "Xdivy": "div", "FloorDiv": "div", "TruncateDiv": "div", "Reciprocal": "reciprocal",
    "Inv": "reciprocal", "Sqrt": "sqrt", "Rsqrt": "rsqrt", "Pow": "pow", "Exp": "exp", "Expm1": "expm1",
    "Acos": "acos", "Asin": "asin", "Atanh": "atanh", "Mul": "mul", "Square": "mul", "SquaredDifference": "mul",
    "Sum": "sum", "Mean": "mean", "MatMul": "mm", "_MklMatMul": "mm", "_FusedMatMul": "addmm",
    "_MklFusedMatMul": "addmm", "BatchMatMulV2": "bmm", "BatchMatMulV3": "bmm", "Softmax": "_softmax",
    "LogSoftmax": "_log_softmax", "SqrtGrad": "sqrt", "RsqrtGrad": "rsqrt", "ReciprocalGrad": "reciprocal",
}


def neutral(op_type: str | None) -> str:
    if not op_type:
        return ""
    return _NEUTRAL.get(op_type, op_type.lower())


# ---------------------------------------------------------------------------
# frames and locations

_internal_cache: dict[str, bool] = {}
_DIRS: tuple[str, ...] = ()


def _is_internal(filename: str) -> bool:
    global _DIRS
    hit = _internal_cache.get(filename)
    if hit is None:
        _DIRS = _package_dirs()  # a new file: Keras may have been imported after the trap went on
        hit = (filename.startswith(_DIRS) or filename.startswith(_OWN_DIR) or filename.endswith(_SKIP_FILES)
               or filename.startswith("<frozen") or filename.startswith("/tmp/__autograph_generated")
               or "__autograph_generated" in filename)
        _internal_cache[filename] = hit
    return hit


def _where(frame):
    """(filename, line, function) of the first user frame from `frame` outwards."""
    while frame is not None:
        code = frame.f_code
        if not _is_internal(code.co_filename):
            return (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


_ag_maps: dict = {}


def _autograph_origin(frame):
    """(filename, line, function) in the user's source of a frame of autograph-generated code (trace time)."""
    code = frame.f_code
    source_map = _ag_maps.get(code)
    if source_map is None:
        import gc

        source_map = {}
        for ref in gc.get_referrers(code):
            if getattr(ref, "__code__", None) is code and hasattr(ref, "ag_source_map"):
                source_map = ref.ag_source_map
                break
        _ag_maps[code] = source_map
    for loc, origin in source_map.items():
        if loc.filename == code.co_filename and loc.lineno == frame.f_lineno:
            return (origin.loc.filename, origin.loc.lineno, origin.function_name)
    return None


def _where_traced(frame):
    """Like _where, through autograph-generated code (used while a function is traced)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "__autograph_generated" in name:
            origin = _autograph_origin(frame)
            if origin is not None and not _is_internal(origin[0]):
                return origin
        elif not _is_internal(name):
            return (name, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def _loc(where) -> Location | None:
    return Location(*where) if where else None


def _keras_module(frame) -> str | None:
    """Path of the Keras layers whose call() is on the stack ("model/dense_1"), outermost first."""
    names = []
    keras = sys.modules.get("keras")
    Layer = getattr(keras, "Layer", None) if keras is not None else None
    if not isinstance(Layer, type):
        return None
    seen = set()
    layers = []
    while frame is not None:
        obj = frame.f_locals.get("self") if frame.f_code.co_name in ("call", "__call__") else None
        if isinstance(obj, Layer) and id(obj) not in seen:
            seen.add(id(obj))
            layers.append(obj)
        frame = frame.f_back
    layers.reverse()  # outermost first
    for i, layer in enumerate(layers):
        if i and getattr(layers[i - 1], "_functional", None) is layer:
            continue  # the functional model a Sequential builds for itself
        names.append(layer.name)
    return "/".join(names) or None


# ---------------------------------------------------------------------------
# tensor helpers


def _is_float(t) -> bool:
    dtype = getattr(t, "dtype", None)
    return dtype is not None and getattr(dtype, "is_floating", False)


def _float_leaves(obj) -> list:
    out = []
    for t in nest.flatten(obj, expand_composites=False):
        if isinstance(t, tf.IndexedSlices):
            t = t.values
        if isinstance(t, (tf.Tensor, tf.Variable)) and _is_float(t):
            out.append(t)
    return out


def _device(t) -> str:
    name = getattr(t, "device", "") or ""
    tail = name.rsplit("device:", 1)[-1] if "device:" in name else name
    kind, _, index = tail.partition(":")
    kind = kind.lower() or "cpu"
    return "cpu" if kind == "cpu" else f"{kind}:{index or 0}"


def _np(t) -> np.ndarray:
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t)


def _kind_np(a: np.ndarray) -> str | None:
    if np.isnan(a).any():
        return "nan"
    if (a == np.inf).any():
        return "+inf"
    if (a == -np.inf).any():
        return "-inf"
    return None


def tensor_stats(t) -> dict[str, Any]:
    a = _np(t)
    out: dict[str, Any] = {"shape": list(a.shape), "dtype": t.dtype.name if hasattr(t, "dtype") else str(a.dtype),
                           "device": _device(t)}
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        return out
    f = a.astype(np.float64)
    finite = f[np.isfinite(f)]
    out["min"] = float(finite.min()) if finite.size else None
    out["max"] = float(finite.max()) if finite.size else None
    out["zeros"] = int((f == 0).sum())
    out["negatives"] = int((finite < 0).sum())
    out["nan"] = int(np.isnan(f).sum())
    pinf, ninf = int((f == np.inf).sum()), int((f == -np.inf).sum())
    out["inf"] = pinf + ninf
    out["+inf"] = pinf
    out["-inf"] = ninf
    return out


def _all_finite_np(values) -> bool:
    return all(np.isfinite(_np(v)).all() for v in values)


def _sum32(t):
    t = t.values if isinstance(t, tf.IndexedSlices) else t
    if t.dtype != tf.float32:
        t = tf.cast(t, tf.float32)
    return tf.reduce_sum(t)


# ---------------------------------------------------------------------------
# findings


class _ReplayDone(BaseException):
    """Ends a replay at the failing gradient() call, before any update runs."""


def scan(records, localized: str) -> Finding | None:
    """The first recorded op whose inputs are finite (NaN-free for a NaN) and whose output is not."""
    for op_type, inputs, outputs, where, phase, extra, _attrs in records:
        if op_type in _NOT_PRODUCERS:
            continue
        outs = [o for o in outputs if _is_float(o) and hasattr(o, "numpy")]
        bad = None
        for o in outs:
            a = _np(o)
            if a.size and not np.isfinite(a).all():
                bad = a
                break
        if bad is None:
            continue
        ins = [_np(i) for i in inputs if _is_float(i) and hasattr(i, "numpy")]
        out_nan = any(np.isnan(_np(o)).any() for o in outs)
        in_nan = any(np.isnan(a).any() for a in ins)
        in_inf = any(np.isinf(a).any() for a in ins)
        if out_nan and not in_nan and ins:
            kind = "nan"
        elif not out_nan and not in_nan and not in_inf and ins and op_type not in _INF_WRITERS:
            kind = _kind_np(bad)
        else:
            continue  # propagated, or an intentional inf (mask, fill, constant)
        module, forward = (extra or {}).get("module"), (extra or {}).get("forward")
        location = _loc(where)
        if phase == "backward" and forward and forward.get("location"):
            location = Location(**forward["location"])
        stats_in = [tensor_stats(i) for i in inputs if hasattr(i, "numpy") and getattr(i, "dtype", None) is not None
                    and i.dtype != tf.resource]
        return Finding(phase, op_type, kind, location, module, forward, inputs=stats_in,
                       outputs=[tensor_stats(o) for o in outs], localized=localized)
    return None


# ---------------------------------------------------------------------------
# sites: gradient() calls traced into a tf.function


class Site:
    """One `gradient()` call traced into a function graph."""

    def __init__(self, index, function, signature, nargs, where, ordinal, variables, replayable):
        self.index = index
        self.function = function  # weakref to the innermost tf.function being traced, or None
        self.signature = signature
        self.nargs = nargs
        self.where = where
        self.ordinal = ordinal
        self.variables = variables  # weakrefs of the source variables (pre-update values are saved)
        self.replayable = replayable
        self.nchecked = 0
        self.nsnap = 0


@dataclass
class Stash:
    site: Site
    checked: list
    args: list
    snapshot: list
    kind: str


def _signature_of(graph):
    """(structured signature, number of tensor args) of a function graph, or (None, 0) if not replayable."""
    sig = getattr(graph, "structured_input_signature", None)
    if sig is None:
        return None, 0
    leaves = nest.flatten(sig, expand_composites=False)
    count = 0
    for leaf in leaves:
        if isinstance(leaf, tf.TensorSpec):
            count += 1
        elif isinstance(leaf, tf.TypeSpec):
            return None, 0  # composite or resource arguments (iterators, datasets): cannot re-feed
    return sig, count


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
        extra = {"module": _keras_module(frame)}
        if trap.phase == "backward":
            extra["forward"] = trap.forward_of(frame)
    records.append((op_type, inputs, outputs, _where(frame), trap.phase, extra, attrs))
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


class TFTrap(IncidentSink):
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
        global _ACTIVE, _DIRS
        if _ACTIVE is not None:
            raise RuntimeError("a stabcheck TensorFlow trap is already active")
        _DIRS = _package_dirs()
        _internal_cache.clear()
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
            for fn in list(self.traced_here):  # retrace without the checks on the next call
                _clear_traces(fn)
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
        values = _float_leaves(target) + ([] if _loss_scaled(frame) else _float_leaves(grads))
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
        where = _where(frame)
        detected = self._detected(target, grads, sources, where)
        records, self.records = self.records, []
        finding = scan(records, "per-op") if not self.overflowed else None
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

    def _backward_from_records(self, records, target, sources, args, kwargs) -> Finding | None:
        """Eager code whose forward was finite: re-execute the recorded forward ops under a new tape
        (same inputs, same variables, not yet updated) and record the backward pass it computes."""
        from tensorflow.python.eager import execute

        ctx = context.context()
        mapping: dict = {}
        forward: list = []
        sub = lambda t: mapping.get(id(t), t)  # noqa: E731
        self.replaying, self.replay_site, self.replay_error = True, None, None
        try:
            with backprop.GradientTape(persistent=True) as tape:
                for v in nest.flatten(sources):
                    if v is not None:
                        tape.watch(v)
                for op_type, inputs, outputs, where, phase, _extra, attrs in records:
                    if phase != "forward":
                        continue
                    new_inputs = [sub(t) for t in inputs]
                    new_outputs = execute.execute(op_type, len(outputs), new_inputs, attrs, ctx)
                    execute.record_gradient(op_type, new_inputs, attrs, new_outputs)
                    for old, new in zip(outputs, new_outputs):
                        mapping[id(old)] = new
                    forward.append((op_type, new_inputs, new_outputs, where, "forward", None, attrs))
            new_target = nest.map_structure(sub, target)
            self.records, self.phase, self.recording = forward, "backward", True
            op_callbacks.add_op_callback(_record_cb)
            try:
                with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
                    self.busy -= 1
                    try:
                        _ORIG_GRADIENT(tape, new_target, sources, *args, **kwargs)
                    finally:
                        self.busy += 1
            finally:
                op_callbacks.remove_op_callback(_record_cb)
            backward = [r for r in self.records if r[4] == "backward"]
        except Exception as exc:  # re-execution not possible (custom gradients, stateful ops): report detection
            self.replay_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return None
        finally:
            self.replaying, self.recording, self.phase, self.records = False, False, "forward", []
        finding = scan(backward, "per-op")
        if finding is not None:
            self.replay_error = None
        return finding

    @staticmethod
    def _finite_eager(values) -> bool:
        if not values:
            return True
        sums = [_sum32(v) for v in values]
        total = sums[0] if len(sums) == 1 else tf.add_n(sums)
        if math.isfinite(float(total)):
            return True
        return _all_finite_np(values)  # exact: a sum of finite values may overflow

    def _detected(self, target, grads, sources, where, kind=None) -> dict:
        flat_t = _float_leaves(target)
        bad_t = next((t for t in flat_t if not np.isfinite(_np(t)).all()), None)
        if bad_t is not None:
            return {"at": "loss", "message": f"the loss passed to GradientTape.gradient() is {_kind_np(_np(bad_t))}",
                    "location": dict(zip(("filename", "line", "function"), where)) if where else None}
        name, what = "a source", kind or "non-finite"
        for src, g in zip(nest.flatten(sources), nest.flatten(grads)):
            if g is None:
                continue
            a = _np(g.values if isinstance(g, tf.IndexedSlices) else g)
            if not np.isfinite(a).all():
                name, what = getattr(src, "path", None) or getattr(src, "name", None) or "a source", _kind_np(a)
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
                return grads  # XLA cannot run py_function: only the boundary sees this step
        except Exception:  # pragma: no cover
            pass
        checked = _float_leaves(target) + ([] if _loss_scaled(frame) else _float_leaves(grads))
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
            sig, nargs = _signature_of(fn_graph)
            placeholders = list(fn_graph.inputs[:nargs]) if sig is not None else []
            variables = [v for v in map(_tf_variable, nest.flatten(sources)) if v is not None]
            site = Site(len(self.sites), weakref.ref(function) if function is not None else None, sig, nargs,
                        _where_traced(frame), ordinal, [weakref.ref(v) for v in variables],
                        sig is not None and function is not None)
            site.nchecked = len(checked)
            site.nsnap = len(variables)
            self.sites.append(site)
            for fn, _ in self.tracing:
                self.with_sites.add(fn)
            total = tf.add_n([_sum32(t) for t in checked]) if len(checked) > 1 else _sum32(checked[0])
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
                grads = _pass_through(grads)
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
                _clear_traces(fn)  # traced before the trap: retrace with the checks
        before = fn.experimental_get_tracing_count()
        depth = len(self.tracing)
        self.tracing.append((fn, {}))
        try:
            result = _ORIG_FN_CALL(fn, *args, **kwargs)
        except tf.errors.OpError:
            del self.tracing[depth:]
            stash, self.stash = self.stash, None
            if stash is None:
                raise
            self.incident(stash, fn)  # raises NonFiniteError unless --action warn
            raise
        finally:
            del self.tracing[depth:]
        if fn.experimental_get_tracing_count() != before:
            self.traced_here.add(fn)
        stash, self.stash = self.stash, None
        if fn in self.with_sites:
            self.steps += 1
            if stash is None:
                self.muted = False  # a healthy step: the next incident is reported again
        if stash is not None:  # --action warn: the step went on; report it now
            self.steps -= 1
            try:
                self.incident(stash, fn)
            finally:
                self.steps += 1
        return result

    # -- localization by replay -----------------------------------------------
    def incident(self, stash: Stash, fn) -> None:
        site = stash.site
        where = site.where
        python_fn = getattr(fn, "python_function", None)
        code = getattr(python_fn, "__code__", None)
        scope = f" in {fn.__name__}()" if code is not None and not _is_internal(code.co_filename) else ""
        checked = stash.checked
        if checked and not np.isfinite(checked[0]).all():
            at, message = "loss", f"the loss passed to GradientTape.gradient(){scope} is {_kind_np(checked[0])}"
        else:
            at, message = "backward", f"the gradients computed{scope} are {stash.kind}"
        detected = {"at": at, "message": message,
                    "location": dict(zip(("filename", "line", "function"), where)) if where else None}
        finding = None
        replayable = site.replayable and site.function is not None and site.function() is not None
        if replayable:
            self.busy += 1
            try:
                finding = self._replay(stash)
            finally:
                self.busy -= 1
        self.trip(detected, finding, "replay" if replayable else None)

    def _replay(self, stash: Stash) -> Finding | None:
        site = stash.site
        function = site.function()
        leaves = nest.flatten(site.signature, expand_composites=False)
        values = iter(stash.args)
        filled = [tf.constant(next(values)) if isinstance(leaf, tf.TensorSpec) else leaf for leaf in leaves]
        call_args, call_kwargs = nest.pack_sequence_as(site.signature, filled, expand_composites=False)
        variables = [ref() for ref in site.variables]
        saved = [(v, tf.identity(v.read_value())) for v in variables if v is not None]
        for v, value in zip(variables, stash.snapshot):
            if v is not None:
                v.assign(value)
        was_eager = tf.config.functions_run_eagerly()
        self.replaying, self.replay_site, self.replay_grad_calls = True, site, 0
        self.records, self.phase, self.overflowed, self.recording = [], "forward", False, True
        self.replay_error = None
        self.busy -= 1  # the replay's own ops are recorded
        op_callbacks.add_op_callback(_record_cb)
        try:
            tf.config.run_functions_eagerly(True)
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                function.python_function(*call_args, **call_kwargs)
        except _ReplayDone:
            pass
        except Exception as exc:  # the replay itself failed: report what the detector saw
            self.replay_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        finally:
            try:
                op_callbacks.remove_op_callback(_record_cb)
            except (KeyError, ValueError):
                pass
            self.busy += 1
            tf.config.run_functions_eagerly(was_eager)
            self.replaying, self.recording, self.phase = False, False, "forward"
            for v, value in saved:
                v.assign(value)
        records, self.records = self.records, []
        finding = scan(records, "replay")
        if finding is not None:
            self.replay_error = None
        return finding

    def replay_gradient(self, tape, target, sources, args, kwargs):
        self.phase = "backward"
        try:
            grads = _ORIG_GRADIENT(tape, target, sources, *args, **kwargs)
        finally:
            self.phase = "forward"
        self.replay_grad_calls += 1
        site = self.replay_site
        if site is None or self.replay_grad_calls > site.ordinal:
            raise _ReplayDone()
        return grads

    def forward_of(self, frame) -> dict | None:
        """The forward op (and its line) whose gradient function is running (backward replay only)."""
        while frame is not None:
            if frame.f_code.co_name == "_gradient_function" and "op_name" in frame.f_locals:
                op_name = frame.f_locals["op_name"]
                outputs = frame.f_locals.get("outputs") or ()
                ids = {id(o) for o in outputs}
                loc = None
                for rec in reversed(self.records):
                    if rec[4] == "forward" and rec[0] == op_name and (not ids or any(id(o) in ids for o in rec[2])):
                        loc = rec[3]
                        break
                if loc is None:
                    loc = next((rec[3] for rec in reversed(self.records) if rec[4] == "forward" and rec[0] == op_name),
                               None)
                return {"op": neutral(op_name), "node": op_name,
                        "location": dict(zip(("filename", "line", "function"), loc)) if loc else None}
            frame = frame.f_back
        return None

    # -- reporting ------------------------------------------------------------
    def trip(self, detected: dict, finding: Finding | None, how: str | None) -> None:
        if self.muted:
            return
        report = self._make_report(detected, finding, how)
        self.emit(report)

    def _make_report(self, detected: dict, finding: Finding | None, how: str | None) -> TrapReport:
        if finding is None:
            kind = "nan"
            msg = detected.get("message", "")
            for k in ("nan", "+inf", "-inf"):
                if msg.endswith(k):
                    kind = k
            if how is None or self.overflowed:
                note, hint = "step could not be replayed", TF_UNREPLAYABLE_HINT
            else:
                note, hint = "replay did not reproduce", TF_UNLOCALIZED_HINT
            if self.replay_error:
                note = f"replay failed ({self.replay_error})"
            detected = dict(detected, message=f"{detected['message']}; {note}")
            loc = detected.get("location")
            report = TrapReport(phase="unknown", kind=kind, location=Location(**loc) if loc else None, hint=hint,
                                detected=detected, localized="no", framework="tensorflow")
        else:
            forward_op = finding.forward.get("op") if finding.forward else None
            rule, hint = hints.lookup(finding.phase, neutral(finding.op), forward_op, finding.kind)
            report = TrapReport(phase=finding.phase, kind=finding.kind, op=finding.op, location=finding.location,
                                module=finding.module, forward=finding.forward, inputs=finding.inputs,
                                outputs=finding.outputs, hint=hint, rule=rule, detected=detected,
                                localized=finding.localized, framework="tensorflow")
        return self.stamp(report, self.steps)


TF_UNREPLAYABLE_HINT = ("the step could not be replayed (a tf.function fed by an iterator or composite tensors, "
                        "an XLA-compiled step, or too many ops); call the step function with tensors, or "
                        "run it eagerly (tf.config.run_functions_eagerly(True)) to find the op")
TF_UNLOCALIZED_HINT = ("the value became non-finite but replaying the step eagerly did not reproduce it (random "
                       "ops such as dropout, nondeterministic kernels, or state the replay cannot see)")


def _tf_variable(v):
    """The tf.Variable of a source: itself, or the one a Keras 3 variable wraps; else None."""
    if isinstance(v, tf.Variable):
        return v
    inner = getattr(v, "_value", None)
    return inner if isinstance(inner, tf.Variable) else None


def _loss_scaled(frame) -> bool:
    """A Keras LossScaleOptimizer is in charge of this step (a local of the calling frames, or the
    trainer's optimizer): an overflow of the scaled gradients is its business, it skips the step."""
    if "keras" not in sys.modules:
        return False
    for _ in range(8):
        if frame is None:
            return False
        for value in frame.f_locals.values():
            opt = getattr(value, "optimizer", None) if not _is_lso(value) else value
            if opt is not None and _is_lso(opt):
                return True
        frame = frame.f_back
    return False


def _is_lso(obj) -> bool:
    return type(obj).__name__ == "LossScaleOptimizer"


def _pass_through(grads):
    """The gradients, through one IdentityN op (created under the caller's control dependency)."""
    flat = nest.flatten(grads)
    dense = [i for i, g in enumerate(flat) if isinstance(g, tf.Tensor)]
    out = list(flat)
    if dense:
        for i, t in zip(dense, tf.identity_n([flat[i] for i in dense])):
            out[i] = t
    for i, g in enumerate(flat):
        if isinstance(g, tf.IndexedSlices):
            out[i] = tf.IndexedSlices(tf.identity(g.values), g.indices, g.dense_shape)
    return nest.pack_sequence_as(grads, out)


def _clear_traces(fn) -> None:
    cache = getattr(fn, "_function_cache", None)
    if cache is not None and hasattr(cache, "clear"):
        cache.clear()


def _on_nonfinite(index: int, values) -> bool:
    """Runs (eagerly, in a TF thread) only when a traced check saw a non-finite sum."""
    trap = _ACTIVE
    if trap is None or index >= len(trap.sites):
        return True
    if trap.muted:  # the cascade of an incident already reported (--action warn)
        return False
    site = trap.sites[index]
    arrays = [np.asarray(v.numpy()) for v in values]
    checked = arrays[: site.nchecked]
    if all(np.isfinite(a).all() for a in checked):
        return True  # a sum of finite values overflowed: not a finding
    kind = next((k for k in map(_kind_np, checked) if k), "nan")
    args = arrays[site.nchecked: site.nchecked + site.nargs]
    snapshot = arrays[site.nchecked + site.nargs:]
    if trap.stash is None:
        trap.stash = Stash(site, checked, args, snapshot, kind)
    if trap.config.action == "stop":
        raise FloatingPointError("stabcheck: non-finite loss or gradients; the step is stopped before the update")
    return False


# ---------------------------------------------------------------------------
# module-level entry points used by tf_api.py


def activate(config: TrapConfig) -> TFTrap:
    trap = TFTrap(config)
    trap.install()
    return trap


def active() -> TFTrap | None:
    return _ACTIVE
