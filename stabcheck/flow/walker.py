"""The walk over one module: statement order, one abstract value per
expression (values.py), events for the checks.

The walk is split by what it decides: statements.py (blocks, bindings,
functions and classes), expressions.py (arithmetic, division, sqrt), calls.py
(library functions, tensor methods, modules and losses), facts.py (sign,
range, guards and context). Each part is a mixin of `Walker`.
"""

from __future__ import annotations

import ast
from typing import Callable

from stabcheck.flow.calls import CallWalker
from stabcheck.flow.expressions import ExpressionWalker
from stabcheck.flow.facts import Context
from stabcheck.flow.scopes import FuncInfo, ClassInfo, Scope
from stabcheck.flow.statements import StatementWalker

# Events the walk emits, with their arguments (`qual`: the qualified name of
# the function called, None for a tensor method):
#   log(node, x, x_val)                     log / log2 / log10
#   log1p(node, x, x_val)
#   sqrt(node, x, x_val, qual)              sqrt, `** 0.5`
#   acos(node, x, x_val)                    acos / asin
#   div(node, num, den, num_val, den_val)   `/`, divide()
#   loss(node, spec, family, qual, pairs)   a loss call; pairs: [(arg_node, arg_val)] predictions
#   mult(node, left, right, lval, rval)     a product `left * right`
#   square(node, base, base_val)            `base ** 2`, `square(base)`, `base.pow(2)`
#   compile(node, loss, loss_val, model_out) Keras `model.compile(loss=...)`
#   absorbed(node, exact, rounded)          constant arithmetic that float32 rounds away
#   half_optimizer(node, eps)               an Adam-family optimiser over float16 weights
EVENTS = (
    "log", "log1p", "sqrt", "acos", "div", "loss", "mult", "square", "compile", "absorbed", "half_optimizer",
)


class Walker(StatementWalker, ExpressionWalker, CallWalker):
    """Analyses one module; `listeners` maps an event name to callbacks."""

    def __init__(self, listeners: dict[str, list[Callable]], resolver=None, package: str | None = None,
                 facts: Context | None = None):
        self.listeners = {ev: tuple(cbs) for ev, cbs in listeners.items() if cbs}
        self.facts = facts if facts is not None else Context()  # where the walk is: guards, gradients
        # Another project module's exports by dotted name (None: single file).
        self._resolver = resolver
        self._package = package
        self._contexts: dict = {}
        self._f32 = 0  # > 0 while evaluating arguments of a float32-framework call
        self._half_keys: set[str] = set()  # models converted to float16
        self._half_call: ast.Call | None = None
        self.scope = Scope()
        self._pending: list[FuncInfo | ClassInfo] = []
        self._declared: set[int] = set()  # defs bound before the walk reached them
        self._absorbed_seen: set[float] = set()  # one finding per absorbed constant

    def _emit(self, event: str, *args) -> None:
        for cb in self.listeners.get(event, ()):
            cb(*args)

