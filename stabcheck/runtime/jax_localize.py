"""Find the JAX primitive that made a NaN: the failing jitted call is traced to a
jaxpr and evaluated equation by equation, with NaN checks off, keeping the
provenance of every non-finite value.

A value's origin is the first equation that turned finite inputs into +-inf,
or NaN-free inputs into NaN; later equations inherit it. So `y * log(p)` with
p == 0 is reported at the `log` (-inf), not at the `mul` (0 * -inf = NaN) that
JAX's own `jax_debug_nans` names. A +-inf that comes from a constant (a
`jnp.where(mask, x, -jnp.inf)` mask, `jnp.full(..., -jnp.inf)`) has no origin:
it is intentional, and only the equation that turns it into NaN (a fully
masked softmax row: -inf - -inf) is a producer.

Every equation keeps the traceback of the user's line that created it, also
after `jax.grad` transformed it (name stack `transpose(jvp(...))`): a backward
equation is reported at the forward line, with the forward primitive it
differentiates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np
from jax._src import core  # Literal, Var: the jaxpr's own classes

from stabcheck.runtime import frames, hints
from stabcheck.runtime.numerics import kind_of_array

# primitives that call a sub-jaxpr with their own inputs: evaluated inside, equation by equation
_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "remat": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr",
          "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr"}


@dataclass
class Input:
    """A non-finite value passed into the jitted call."""

    path: str  # the argument, as `argument 0['w']`
    kind: str


@dataclass
class Producer:
    primitive: str
    kind: str
    phase: str  # forward | backward
    where: tuple | None  # (filename, line, function) of the user's line
    forward_op: str | None = None  # for a backward equation: the forward primitive it differentiates
    inputs: list = field(default_factory=list)  # the values themselves (arrays, or Python numbers of literals)
    outputs: list = field(default_factory=list)


def user_where(traceback) -> tuple | None:
    """(filename, line, function) of the innermost frame outside JAX, other libraries and stabcheck."""
    for frame in getattr(traceback, "frames", None) or ():
        if not frames.is_library(frame.file_name):
            return frame.file_name, frame.line_num, frame.function_name
    return None


def _host(value):
    try:
        return np.asarray(value)
    except Exception:  # a token, a key array: not a number
        return None


def _kind(value) -> str | None:
    a = _host(value)
    if a is None or not np.issubdtype(a.dtype, np.inexact):
        return None
    return kind_of_array(a)


# primitives whose derivative is written with their output (sqrt: 0.5 / sqrt(x))
_DERIVATIVE_OF_OUTPUT = {"sqrt", "rsqrt", "cbrt", "exp", "exp2", "tanh", "logistic"}


class _Level:
    """One jaxpr being evaluated: who defines and who uses each variable (for the backward rules)."""

    def __init__(self, jaxpr, name_stack: str):
        self.jaxpr = jaxpr
        self.name_stack = name_stack
        self.defined_by = {}
        self.used_by: dict = {}
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                self.defined_by[v] = eqn
            for v in eqn.invars:
                if not isinstance(v, core.Literal):
                    self.used_by.setdefault(v, []).append(eqn)

    def stack_of(self, eqn) -> str:
        return f"{self.name_stack}/{eqn.source_info.name_stack}"

    def phase_of(self, eqn) -> str:
        stack = self.stack_of(eqn)
        if "transpose" in stack:
            return "backward"
        # under jvp, a value that only transposed equations use is a derivative (sqrt's 0.5 / sqrt(x))
        users = [u for v in eqn.outvars for u in self.used_by.get(v, ())]
        if "jvp" in stack and users and all("transpose" in self.stack_of(u) for u in users):
            return "backward"
        return "forward"

    def forward_op(self, eqn, where) -> str | None:
        """The forward primitive a backward equation differentiates: one at the same line that
        defines or uses one of its inputs (preferring one whose derivative is known to blow up)."""
        candidates = []
        for v in eqn.invars:
            if isinstance(v, core.Literal):
                continue
            # the op whose derivative is taken uses v as its input (log's g / x), or made v when its
            # derivative is written with its output (sqrt's 0.5 / y): so `log(softmax(x))` on one line
            # is log's, not the softmax's division that made log's input
            maker = self.defined_by.get(v)
            makers = [maker] if maker is not None and maker.primitive.name in _DERIVATIVE_OF_OUTPUT else []
            for other in [*makers, *self.used_by.get(v, ()), maker]:
                if other is None or other is eqn or self.phase_of(other) == "backward":
                    continue
                if user_where(other.source_info.traceback) == where:
                    candidates.append(other.primitive.name)
        known = [c for c in candidates if neutral(c) in hints.BACKWARD]
        return (known or candidates or [None])[0]


def neutral(primitive: str) -> str:
    """JAX primitive -> the framework-neutral op name of hints.py."""
    return {"integer_pow": "pow", "reduce_sum": "sum", "dot_general": "mm", "exp2": "exp",
            "logistic": "sigmoid"}.get(primitive, primitive)


def _bind(eqn, invals):
    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
        invals = [*subfuns, *invals]
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _sub_jaxpr(eqn):
    key = _CALLS.get(eqn.primitive.name)
    sub = eqn.params.get(key) if key else None
    if sub is None:
        return None
    jaxpr, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
    if len(jaxpr.invars) != len(eqn.invars) or len(jaxpr.outvars) != len(eqn.outvars):
        return None
    return jaxpr, consts


def _evaluate(level: _Level, consts, args, origins):
    """Outputs and their origins (None: finite, or non-finite on purpose; an Input or a Producer)."""
    jaxpr = level.jaxpr
    env, origin = {}, {}
    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x, o in zip(jaxpr.invars, args, origins):
        env[v], origin[v] = x, o

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            inner = _Level(sub[0], level.stack_of(eqn))
            in_origins = [None if isinstance(v, core.Literal) else origin.get(v) for v in eqn.invars]
            outvals, out_origins = _evaluate(inner, sub[1], invals, in_origins)
        else:
            outvals = _bind(eqn, invals)
            out_origins = [None] * len(outvals)
            kinds = [_kind(x) for x in outvals]
            if any(kinds):
                out_origins = _origins(level, eqn, invals, outvals, kinds, origin)
        for v, x, o in zip(eqn.outvars, outvals, out_origins):
            env[v] = x
            if o is not None:
                origin[v] = o
    return [read(v) for v in jaxpr.outvars], [
        None if isinstance(v, core.Literal) else origin.get(v) for v in jaxpr.outvars]


def _origins(level: _Level, eqn, invals, outvals, kinds, origin) -> list:
    in_kinds = [_kind(x) for x in invals]
    inherited = next((origin[v] for v in eqn.invars if not isinstance(v, core.Literal) and origin.get(v)), None)
    if inherited is not None:
        return [inherited if k else None for k in kinds]
    in_nan = "nan" in in_kinds
    in_inf = any(k in ("+inf", "-inf") for k in in_kinds)
    made = None
    if invals and not in_nan and "nan" in kinds:
        made = "nan"
    elif invals and not in_nan and not in_inf:
        made = next(k for k in kinds if k)
    if made is None:
        return [None] * len(outvals)  # an intentional +-inf (a constant) passed on, or turned into +-inf
    where = user_where(eqn.source_info.traceback)
    phase = level.phase_of(eqn)
    producer = Producer(eqn.primitive.name, made, phase, where,
                        forward_op=level.forward_op(eqn, where) if phase == "backward" else None,
                        inputs=list(invals), outputs=list(outvals))
    return [producer if k else None for k in kinds]


def _name(keypath) -> str:
    """`(SequenceKey(0), SequenceKey(1), DictKey('w'))` -> `argument 1['w']`."""
    if len(keypath) < 2:
        return "an argument"
    rest = jax.tree_util.keystr(tuple(keypath[2:]))
    if getattr(keypath[0], "idx", None) == 0:
        return f"argument {keypath[1].idx}{rest}"
    return f"keyword argument {getattr(keypath[1], 'key', '?')}{rest}"


#: the compiled call returned NaN, the primitive-by-primitive evaluation does not (XLA's fusions)
NOT_REPRODUCED = "not reproduced"


def localize(fun, args, kwargs):
    """The origin of the first NaN in `fun(*args, **kwargs)`'s outputs: a Producer, an Input, None
    (the NaN comes from a constant: written on purpose) or NOT_REPRODUCED."""
    leaves_with_path, tree = jax.tree_util.tree_flatten_with_path((tuple(args), dict(kwargs)))
    leaves = [x for _, x in leaves_with_path]
    dynamic = [i for i, x in enumerate(leaves) if isinstance(x, (jax.Array, np.ndarray))]

    def call(*arrays):  # non-array leaves (static arguments, Python numbers) stay as they are
        filled = list(leaves)
        for i, x in zip(dynamic, arrays):
            filled[i] = x
        a, k = jax.tree_util.tree_unflatten(tree, filled)
        return fun(*a, **k)

    with jax.debug_nans(False):
        closed = jax.make_jaxpr(call)(*[leaves[i] for i in dynamic])
        args_flat = [leaves[i] for i in dynamic]
        # a NaN passed in is named; an inf passed in may be a mask, like an inf constant
        origins = [Input(_name(leaves_with_path[i][0]), "nan") if _kind(x) == "nan" else None
                   for i, x in zip(dynamic, args_flat)]
        outvals, out_origins = _evaluate(_Level(closed.jaxpr, ""), closed.consts, args_flat, origins)
    for x, o in zip(outvals, out_origins):
        if _kind(x) == "nan":
            return o
    return NOT_REPRODUCED

