"""What the parts of the PyTorch adapter share: the user's frames, tensor checks and
statistics, the op tables of the producer rule, and the RNG state a replay restores."""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from stabcheck.runtime import frames, numerics
from stabcheck.runtime.report import Location

# Libraries whose frames are never the user's line: torch itself and the frameworks that drive it
# (Keras 3 with KERAS_BACKEND=torch runs the user's model and loss from keras/src/...). The one list
# of library roots for every frame walk of this adapter (see is_internal).
LIBRARY_PACKAGES = ("torch", "keras", "tf_keras", "tensorflow")

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_LIBRARY_DIRS = tuple(dict.fromkeys(d for d in (_TORCH_DIR, *map(frames.package_dir, LIBRARY_PACKAGES[1:])) if d))
OWN_DIR = frames.OWN_DIR

# aten ops that legitimately write +-inf from finite inputs (attention masks, padding)
INF_WRITERS = {"masked_fill", "masked_fill_", "fill", "fill_", "full", "full_like", "new_full", "where",
               "index_put", "index_put_", "index_fill", "index_fill_", "scatter", "scatter_", "masked_scatter",
               "masked_scatter_", "copy", "copy_", "_to_copy", "clone", "lift_fresh", "lift_fresh_copy",
               "scalar_tensor", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "set_"}

# ops whose output never depends on non-finite input values: views, copies, (re)initialisers
NOT_PRODUCERS = {"detach", "_to_copy", "copy", "copy_", "clone", "lift_fresh", "lift_fresh_copy", "alias",
                 "normal", "normal_", "uniform", "uniform_", "zero", "zero_", "fill", "fill_", "random", "random_",
                 "bernoulli", "bernoulli_", "exponential_", "geometric_", "cauchy_", "log_normal_", "set_",
                 "resize_", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros_like",
                 "ones_like"}

# copies that may narrow the dtype (float32 -> float16 overflows above 65504)
CASTS = {"_to_copy", "copy", "copy_"}


# ---------------------------------------------------------------------------
# frames and locations

#: True inside a functorch transform (vmap, grad, jacrev of torch.func): values there are wrapped per
#: level and cannot be read, copied out or replayed -- the trap keeps off them. (Asked on every top-level
#: module call: `_functorch.maybe_current_level` cost 12k instructions a call, this next to nothing.)
in_functorch = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def is_internal(filename: str) -> bool:
    """A frame of a library (LIBRARY_PACKAGES) or of the standard library's plumbing: not the user's."""
    return filename.startswith(_LIBRARY_DIRS) or filename.endswith(frames.SKIP_FILES) or filename.startswith("<frozen")


# code objects of the trap's wrappers around library calls (Module.__call__, Function.apply): frames
# that a walk from a replayed op to the user's forward passes through (filled in by torch_trap)
PASS_THROUGH: set = set()


def caller(frame, stop_at_own: bool = False):
    """First user frame from `frame` outwards (see frames.user_frame)."""
    return frames.user_frame(frame, is_internal, stop_at_own, PASS_THROUGH)


def loc_of(frame) -> Location | None:
    return frames.location(frame)


_USER_CODE: dict = {}  # code object -> is it the user's (neither a library nor stabcheck): asked per module call


def where(frame):
    """(code, instruction offset) of the first user frame from `frame` outwards: what a recorded call keeps
    of its caller (`site` makes it a Location). The same walk as `caller`, with its answer per code
    object kept; the line is not asked here: a frame finds it by scanning its code's line table, which
    took microseconds per module call in a long training function."""
    while frame is not None:
        code = frame.f_code
        user = _USER_CODE.get(code)
        if user is None:
            if len(_USER_CODE) > 50000:  # code made at run time (exec in a loop): bounded
                _USER_CODE.clear()
            name = code.co_filename
            user = _USER_CODE[code] = not name.startswith(OWN_DIR) and not is_internal(name)
        if user:
            return code, frame.f_lasti
        frame = frame.f_back
    return None


def site(at) -> Location | None:
    """The Location of a `where` result (None stays None)."""
    if at is None:
        return None
    code, offset = at
    line = next((line for start, end, line in code.co_lines() if start <= offset < end and line is not None),
                code.co_firstlineno)
    return Location(code.co_filename, line, code.co_name)


def loc_from_traceback(lines) -> tuple[Location | None, bool]:
    """Innermost user frame of an anomaly-mode traceback; (loc, hit_own_code_first)."""
    return frames.loc_from_traceback(lines, is_internal)


# ---------------------------------------------------------------------------
# tensor helpers

def dense_float(t: torch.Tensor) -> bool:
    """A tensor the checks can sum: floating, not sparse, not nested (the Transformer's fast path
    returns nested tensors, which have no sum)."""
    return t.is_floating_point() and not t.is_sparse and not t.is_nested


def float_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if dense_float(obj) else []
    if type(obj) in (list, tuple) and all(type(t) is torch.Tensor for t in obj):
        return [t for t in obj if dense_float(t)]
    leaves, _ = tree_flatten(obj)
    return [t for t in leaves if isinstance(t, torch.Tensor) and dense_float(t)]


def output_tensors(obj) -> list[torch.Tensor]:
    """The tensors of a call's output: its pytree leaves, and the tensors an object among them keeps as
    attributes (a module that returns a torch.distributions Normal: its loc and scale)."""
    found = []
    for leaf in tree_flatten(obj)[0]:
        if isinstance(leaf, torch.Tensor):
            found.append(leaf)
        elif hasattr(leaf, "__dict__") and not isinstance(leaf, type):
            found.extend(v for v in vars(leaf).values() if isinstance(v, torch.Tensor))
    return found


def paired_outputs(original, replayed):
    """(original, replayed) tensor pairs of two outputs of the same call: pytree leaves in order, an
    object's tensor attributes by name."""
    for a, b in zip(tree_flatten(original)[0], tree_flatten(replayed)[0]):
        if isinstance(a, torch.Tensor):
            if isinstance(b, torch.Tensor):
                yield a, b
        elif type(a) is type(b) and hasattr(a, "__dict__") and not isinstance(a, type):
            theirs = vars(b)
            for name, value in vars(a).items():
                if isinstance(value, torch.Tensor) and isinstance(theirs.get(name), torch.Tensor):
                    yield value, theirs[name]


# Tensor.item without the read-back check that readback.py installs (the trap's own reads are no incidents)
host_item = torch._C.TensorBase.item


def checkable(grad):
    """The values of a gradient that a finiteness check reads: the tensor itself when dense, the
    stored values of a sparse one (nn.Embedding(sparse=True)); None when not floating point."""
    if grad is None or not grad.is_floating_point():
        return None
    if grad.layout == torch.strided:
        return grad
    if grad.layout == torch.sparse_coo:
        return grad._values()
    try:
        return grad.values()  # compressed layouts (CSR, CSC, BSR, BSC)
    except RuntimeError:
        return None


def finite_now(t: torch.Tensor) -> bool:
    if t.numel() == 1:
        return math.isfinite(host_item(t))
    return bool(torch.isfinite(t).all())


def nan_free_now(t: torch.Tensor) -> bool:
    if t.numel() == 1:
        return not math.isnan(host_item(t))
    return not bool(torch.isnan(t).any())


def kind_of(t: torch.Tensor) -> str | None:
    t = t.detach()
    if bool(torch.isnan(t).any()):
        return "nan"
    if bool((t == math.inf).any()):
        return "+inf"
    if bool((t == -math.inf).any()):
        return "-inf"
    return None


def tensor_stats(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach()
    dtype, device = str(t.dtype).replace("torch.", ""), str(t.device)
    if t.is_sparse or t.is_complex() or t.device.type == "meta":
        return {"shape": list(t.shape), "dtype": dtype, "device": device}
    if t.is_floating_point() and t.dtype != torch.float64:
        t = t.float()  # float16 / bfloat16 have no NumPy twin
    return numerics.array_stats(t.cpu().numpy(), dtype, device)


def stats_list(values) -> list[dict]:
    result = []
    for v in values:
        if isinstance(v, torch.Tensor):
            result.append(tensor_stats(v))
        elif isinstance(v, (int, float, bool)):
            result.append({"value": v if not isinstance(v, float) or math.isfinite(v) else str(v)})
    return result


def node_name():
    node = torch._C._current_autograd_node()
    return node.name() if node is not None else None


def root_name(module) -> str:
    """The user's name for a top-level module: a local of a user frame on the stack, a global of
    __main__, else its class name. Only called while building a report."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(OWN_DIR) and not is_internal(name):
            for key, value in frame.f_locals.items():
                if value is module and key != "self":
                    return key
        frame = frame.f_back
    for modname in ("__main__", "__mp_main__"):
        mod = sys.modules.get(modname)
        if mod is not None:
            for key, value in vars(mod).items():
                if value is module and not key.startswith("_"):
                    return key
    return type(module).__name__


def tensor_name(t, frame) -> str | None:
    """The user's variable name for a tensor (`w`), from the user's frames or __main__; for messages."""
    if t is None:
        return None
    frame = caller(frame)
    while frame is not None:
        if not is_internal(frame.f_code.co_filename) and not frame.f_code.co_filename.startswith(OWN_DIR):
            for key, value in frame.f_locals.items():
                if value is t:
                    return key
        frame = frame.f_back
    main = sys.modules.get("__main__")
    for key, value in (vars(main).items() if main is not None else ()):
        if value is t:
            return key
    return None


# ---------------------------------------------------------------------------
# RNG and autocast state (a replay runs with the recorded ones)

HAS_CUDA = torch.cuda.is_available()
AMP_DEVICES = ("cpu", "cuda") if HAS_CUDA else ("cpu",)


def rng_state():
    state = [torch.get_rng_state()]
    if HAS_CUDA and torch.cuda.is_initialized():
        state.append(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if len(state) > 1:
        torch.cuda.set_rng_state_all(state[1])


# ---------------------------------------------------------------------------
# graph and scope walks

def grad_leaves(roots) -> list:
    """The leaf tensors whose .grad a backward() from `roots` fills (a walk of the graph, only while
    no optimizer is known)."""
    leaves, seen = [], set()
    stack = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.append(variable)
        stack.extend(fn for fn, _ in node.next_functions)
    return leaves


def kept_by_the_program(frame) -> set:
    """ids of the tensors the program can still see at its end: globals of __main__ and locals of the
    user's frames on the stack, and the items of their lists, tuples and dicts (a value computed and
    dropped is no outcome of the run)."""
    scopes = [vars(m) for m in (sys.modules.get("__main__"),) if m is not None]
    while frame is not None:
        if not frame.f_code.co_filename.startswith(OWN_DIR) and not is_internal(frame.f_code.co_filename):
            scopes.append(frame.f_locals)
        frame = frame.f_back
    kept: set = set()
    level = [v for scope in scopes for v in list(scope.values())]
    for _depth in range(3):  # a tensor, a list of them, a dict holding such lists
        nested: list = []
        for value in level[:100000]:
            if isinstance(value, torch.Tensor):
                kept.add(id(value))
            elif isinstance(value, dict):
                nested.extend(list(value.values()))
            elif isinstance(value, (list, tuple)):
                nested.extend(value)
        level = nested
    return kept
