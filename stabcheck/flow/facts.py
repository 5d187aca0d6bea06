"""Facts about values: sign and range, guards, what a reduction of a value is.

Where a value's sign is decided: `sign_of_product`, `reduction_value`, and the
`NonPos`/`NonNeg` cases of the expression walk (expressions.py). Where a
guard is recognised: `useful_bound`, `guarded_value`, and `Context` below
(enclosing `if d > 0:` tests, `where(d > 0, ...)`, `no_grad` blocks).
"""

from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.flow.syntax import call_arg, base_key, const_value
from stabcheck.values import Const, Exp, Guarded, NonNeg, NonPos, Prob, Red, Sq

NONNEG = (Sq, NonNeg)


def useful_bound(node: ast.AST | None, low: bool) -> bool:
    """Does a clamp bound keep log away from 0 (low) or 1 - p away from 0 (high)?

    A constant must be > 0 (low) or < 1 (high); a non-constant bound
    (`eps`, `1 - eps`, `K.epsilon()`) is trusted.
    """
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return False
    c = const_value(node)
    if c is None:
        return True
    return c > 0.0 if low else c < 1.0


def guarded_value(val, lo: bool, hi: bool):
    if isinstance(val, Prob):
        return val.guarded(lo, hi)
    if isinstance(val, Red):
        return val.with_guard() if lo else val
    if isinstance(val, Guarded):
        return Guarded(val.lo or lo, val.hi or hi)
    return Guarded(lo, hi)



def reduction_value(kind: str, node, x_val):
    """The value of sum(x), norm(x), ... given what x holds."""
    if kind in (N.SUM, N.MEAN):
        if isinstance(x_val, Exp):
            return Red(kind, node, pos=True, exp=x_val)
        if isinstance(x_val, Prob):
            return Red(kind, node, pos=True)
        if isinstance(x_val, Sq):
            return Red(kind, node, sumsq=True)
        if isinstance(x_val, Red):
            return Red(kind, node, pos=x_val.pos, guarded=x_val.guarded, exp=x_val.exp, sumsq=x_val.sumsq)
    return Red(kind, node)


def sign_of_product(a, b):
    """`-0.5 * x ** 2` is at most 0. A product of a non-positive factor with
    an unknown one counts as non-positive: stabcheck flags what it can
    prove, and an explicit negation shows the intent."""
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const):
            if x.value < 0 and isinstance(y, NONNEG) or x.value > 0 and isinstance(y, NonPos):
                return NonPos()
        elif isinstance(x, NonPos) and (y is None or isinstance(y, NONNEG)):
            return NonPos()
    return None


def clamps_inside_unit(func: N.Func, node: ast.Call, qual: str | None) -> bool:
    """Does a clamp keep a cosine where acos is differentiable? With autodiff
    the bounds must be strictly inside (-1, 1); NumPy only needs [-1, 1]."""
    lo = call_arg(node, *func.lo) if func.lo else None
    hi = call_arg(node, *func.hi) if func.hi else None
    if lo is None or hi is None:
        return False
    strict = qual is None or N.framework_of(qual) in N.AUTODIFF_ROOTS
    for bound, inside in ((const_value(lo), lambda v: v > -1.0), (const_value(hi), lambda v: v < 1.0)):
        if bound is not None and (inside(bound) if strict else abs(bound) <= 1.0) is False:
            return False
    return True


def named_max(node: ast.AST) -> bool:
    """`x - x_max`, `logits - max_logit`: a name that says it holds a maximum
    (computed where the walk cannot see, e.g. a helper in another library)."""
    key = base_key(node)
    return key is not None and "max" in key.rsplit(".", 1)[-1].lower()
