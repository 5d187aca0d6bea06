"""What the parts of the TensorFlow adapter share: the user's frames (through
autograph-generated code too), tensor helpers and statistics, the op tables of
the producer rule, and a few Keras facts (loss scaling, Keras 3 variables)."""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import backprop
from tensorflow.python.util import nest

from stabcheck.runtime import frames, numerics
from stabcheck.runtime.frames import OWN_DIR
from stabcheck.runtime.report import Location


def package_dirs() -> tuple[str, ...]:
    dirs = [os.path.dirname(tf.__file__) + os.sep]
    for name in ("keras", "tf_keras", "tensorflow_core", "optree", "tree", "absl", "wrapt", "numpy", "h5py"):
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        if path:
            dirs.append(os.path.dirname(path) + os.sep)
    return tuple(dirs)


_SKIP_FILES = (*frames.SKIP_FILES, "threading.py")
# op types that write +-inf from finite inputs on purpose (masks, padding, constants) or only move values
INF_WRITERS = frozenset({
    "Fill", "Const", "SelectV2", "Select", "Where", "ZerosLike", "OnesLike", "BroadcastTo", "Pad", "PadV2",
    "MirrorPad", "ScatterNd", "TensorScatterUpdate", "TensorScatterAdd", "TensorScatterMin", "TensorScatterMax",
    "Identity", "IdentityN", "Reshape", "Transpose", "ConcatV2", "Pack", "Unpack", "StridedSlice", "Slice",
    "GatherV2", "GatherNd", "Tile", "ExpandDims", "Squeeze", "ReadVariableOp", "Snapshot", "Split", "SplitV",
    "Min", "Max", "Minimum", "Maximum", "MatrixBandPart", "MatrixSetDiag", "StopGradient", "Reverse",
    "ReverseV2", "OneHot", "Cast",
})
# ops that never produce a value from their inputs' values
NOT_PRODUCERS = frozenset({"ReadVariableOp", "AssignVariableOp", "VarHandleOp", "Identity", "IdentityN",
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

ORIG_GRADIENT = backprop.GradientTape.gradient  # captured before any trap patches it

_internal_cache: dict[str, bool] = {}
_DIRS: tuple[str, ...] = ()


def reset_library_dirs() -> None:
    """Look the library directories up again (the trap is installed; Keras may load later)."""
    global _DIRS
    _DIRS = package_dirs()
    _internal_cache.clear()


def is_internal(filename: str) -> bool:
    global _DIRS
    hit = _internal_cache.get(filename)
    if hit is None:
        _DIRS = package_dirs()  # a new file: Keras may have been imported after the trap went on
        hit = (filename.startswith(_DIRS) or filename.startswith(OWN_DIR) or filename.endswith(_SKIP_FILES)
               or filename.startswith("<frozen") or "__autograph_generated" in filename)
        _internal_cache[filename] = hit
    return hit


def user_where(frame):
    """(filename, line, function) of the first user frame from `frame` outwards."""
    return frames.where_of(frames.user_frame(frame, is_internal))


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


def user_where_traced(frame):
    """Like user_where, through autograph-generated code (used while a function is traced)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if "__autograph_generated" in name:
            origin = _autograph_origin(frame)
            if origin is not None and not is_internal(origin[0]):
                return origin
        elif not is_internal(name):
            return (name, frame.f_lineno, frame.f_code.co_name)
        frame = frame.f_back
    return None


def to_location(where) -> Location | None:
    return Location(*where) if where else None


def keras_module(frame) -> str | None:
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


def is_float(t) -> bool:
    dtype = getattr(t, "dtype", None)
    return dtype is not None and getattr(dtype, "is_floating", False)


def float_leaves(obj) -> list:
    out = []
    for t in nest.flatten(obj, expand_composites=False):
        if isinstance(t, tf.IndexedSlices):
            t = t.values
        if isinstance(t, (tf.Tensor, tf.Variable)) and is_float(t):
            out.append(t)
    return out


def device_of(t) -> str:
    name = getattr(t, "device", "") or ""
    tail = name.rsplit("device:", 1)[-1] if "device:" in name else name
    kind, _, index = tail.partition(":")
    kind = kind.lower() or "cpu"
    return "cpu" if kind == "cpu" else f"{kind}:{index or 0}"


def as_np(t) -> np.ndarray:
    return np.asarray(t.numpy() if hasattr(t, "numpy") else t)


def tensor_stats(t) -> dict[str, Any]:
    a = as_np(t)
    return numerics.array_stats(a, t.dtype.name if hasattr(t, "dtype") else str(a.dtype), device_of(t))


def all_finite_np(values) -> bool:
    return all(np.isfinite(as_np(v)).all() for v in values)


def sum32(t):
    t = t.values if isinstance(t, tf.IndexedSlices) else t
    if t.dtype != tf.float32:
        t = tf.cast(t, tf.float32)
    return tf.reduce_sum(t)


def tf_variable(v):
    """The tf.Variable of a source: itself, or the one a Keras 3 variable wraps; else None."""
    if isinstance(v, tf.Variable):
        return v
    inner = getattr(v, "_value", None)
    return inner if isinstance(inner, tf.Variable) else None


def loss_scaled(frame) -> bool:
    """A Keras LossScaleOptimizer is in charge of this step (a local of the calling frames, a global
    their code names -- `opt = LossScaleOptimizer(...)` at module level, used in a tf.function -- or
    the trainer's optimizer): an overflow of the scaled gradients is its business, it skips the step."""
    if "keras" not in sys.modules:
        return False
    for _ in range(8):
        if frame is None:
            return False
        names = frame.f_globals
        # (a module or class is no optimizer, and asking a lazily loaded module for one would load it)
        used = [names[n] for n in frame.f_code.co_names
                if n in names and not isinstance(names[n], (types.ModuleType, type))]
        for value in (*frame.f_locals.values(), *used):
            opt = getattr(value, "optimizer", None) if not _is_lso(value) else value
            if opt is not None and _is_lso(opt):
                return True
        frame = frame.f_back
    return False


def _is_lso(obj) -> bool:
    return type(obj).__name__ == "LossScaleOptimizer"


def pass_through(grads):
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


def clear_traces(fn) -> None:
    cache = getattr(fn, "_function_cache", None)
    if cache is not None and hasattr(cache, "clear"):
        cache.clear()
