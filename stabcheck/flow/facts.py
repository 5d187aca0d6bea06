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
from stabcheck.values import Const, Delta, Diff, Exp, Guarded, NonNeg, NonPos, Prob, Raw, Red, Sq

NONNEG = (Sq, NonNeg)
MAX_ABS = "maxabs"  # the max of values that are >= 0 (a peak or the largest norm)


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



def capped(val):
    """`sum(exp(x)).clamp_max(1)`: a sum of exps with an upper bound cannot overflow."""
    if isinstance(val, Red) and val.exp is not None:
        exp = Exp(val.exp.node, True, val.exp.qual)
        return Red(val.kind, val.node, val.pos, val.guarded, exp, val.sumsq, val.dist)
    return val


def reduction_value(kind: str, node, x_val, per_row: bool = False):
    """The value of sum(x), norm(x), ... given what x holds."""
    if kind in (N.SUM, N.MEAN):
        if isinstance(x_val, Exp):
            return Red(kind, node, pos=True, exp=x_val, per_row=per_row)
        if isinstance(x_val, Prob):
            return Red(kind, node, pos=True, per_row=per_row)
        if isinstance(x_val, Sq):
            return Red(kind, node, sumsq=True, dist=x_val.diff, per_row=per_row)
        if isinstance(x_val, Red):
            return Red(kind, node, x_val.pos, x_val.guarded, x_val.exp, x_val.sumsq, x_val.dist, per_row)
    if kind == N.MAX and (isinstance(x_val, NONNEG) or isinstance(x_val, Red) and x_val.kind == N.NORM):
        return Red(MAX_ABS, node, per_row=per_row)  # `x.abs().max()`, `torch.max(norms)`: 0 only for all zeros
    return Red(kind, node, per_row=per_row)


def sign_of_sum(a, b, subtract: bool):
    """`x**2 + y**2` >= 0, `-a - b**2` <= 0: same-signed terms keep their sign."""
    if subtract:
        b = NonPos() if isinstance(b, NONNEG) else NonNeg() if isinstance(b, NonPos) else None
    if isinstance(a, NONNEG) and isinstance(b, NONNEG):
        return NonNeg()
    if isinstance(a, NonPos) and isinstance(b, NonPos):
        return NonPos()
    return None


def square_of(node: ast.AST, base) -> Sq:
    """The value of `base ** 2` (or `base * base`, `square(base)`)."""
    return Sq(node, is_difference(base), isinstance(base, Raw))


def is_difference(val) -> bool:
    """Is this the value of `a - b` (so that its square is a squared distance)?"""
    return isinstance(val, Diff) or isinstance(val, Delta) and not val.centred


def named_mean(node: ast.AST) -> bool:
    """`x - mean`, `x - x_mean`, `x - mu`: a deviation from a mean."""
    key = base_key(node)
    last = key.rsplit(".", 1)[-1].lower() if key else ""
    return "mean" in last or last in ("mu", "avg", "m")


def where_value(call: ast.Call):
    """`where(x >= 0, x, -x)` is |x| (NonNeg); `where(x >= 0, -x, x)` is -|x|."""
    if len(call.args) != 3 or not isinstance(call.args[0], ast.Compare) or len(call.args[0].ops) != 1:
        return None
    test, a, b = call.args
    op, left, right = type(test.ops[0]), test.left, test.comparators[0]
    if const_value(right) != 0.0:
        return None
    positive_first = op in (ast.Gt, ast.GtE)
    if not positive_first and op not in (ast.Lt, ast.LtE):
        return None
    key = ast.dump(left)

    def is_neg(n):
        return isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) and ast.dump(n.operand) == key

    if ast.dump(a) == key and is_neg(b):
        return NonNeg() if positive_first else NonPos()
    if is_neg(a) and ast.dump(b) == key:
        return NonPos() if positive_first else NonNeg()
    return None


def negated(val):
    """The sign facts of `-x`."""
    if isinstance(val, NONNEG):
        return NonPos()
    if isinstance(val, NonPos):
        return NonNeg()
    return None


def sign_of_product(a, b):
    """`-0.5 * x ** 2` is at most 0. A product of a non-positive factor with
    an unknown one counts as non-positive: stabcheck flags what it can
    prove, and an explicit negation shows the intent."""
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const):
            if x.value < 0 and isinstance(y, NONNEG) or x.value > 0 and isinstance(y, NonPos):
                return NonPos()
            if x.value > 0 and isinstance(y, (Sq, Raw)):
                return y  # `2 * sd ** 2`: still a square; `2 * energy`: still a raw output
        elif isinstance(x, NonPos) and (y is None or isinstance(y, (Delta, *NONNEG))):
            return NonPos()
    return None


def clamps_inside_unit(func: N.Func, node: ast.Call, strict: bool) -> bool:
    """Does a clamp keep a cosine where acos is defined, and differentiable
    where gradients flow (`strict`: strictly inside (-1, 1))? Without
    gradients (NumPy, metrics, no_grad) [-1, 1] is enough."""
    lo = call_arg(node, *func.lo) if func.lo else None
    hi = call_arg(node, *func.hi) if func.hi else None
    if lo is None or hi is None:
        return False
    for bound, inside in ((const_value(lo), lambda v: v > -1.0), (const_value(hi), lambda v: v < 1.0)):
        if bound is not None and (inside(bound) if strict else abs(bound) <= 1.0) is False:
            return False
    return True


_MAX_WORDS = frozenset({"max", "amax", "maximum", "logsumexp"})


def named_max(node: ast.AST) -> bool:
    """`x - x_max`, `logits - max_logit`: a name that says it holds a maximum
    (computed where the walk cannot see, e.g. a helper in another library)."""
    if isinstance(node, ast.Call):  # `x - _max_mask_non_finite(x)`, `x - x.logsumexp(-1)`
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        return bool(_MAX_WORDS & set(name.lower().split("_")))
    key = base_key(node)
    return key is not None and "max" in key.rsplit(".", 1)[-1].lower()


# ---------------------------------------------------------------- context
_AUTODIFF_IMPORTS = frozenset({"torch", "tensorflow", "keras", "jax", "autograd", "flax", "optax", "tf_keras"})


class Context:
    """What holds where the walk is now, for the checks to consult.

    - `no_grad`: > 0 inside `with torch.no_grad():`, a function decorated with
      it, the argument of `stop_gradient`, or the receiver of `.item()` /
      `.detach()` / `.numpy()`: nothing computed there is differentiated.
    - `autodiff`: the module imports an autodiff framework; a tensor method
      (`x.sqrt()`) in a module that imports only NumPy has no gradient.
    - `evaluation`: a metrics or evaluation module (`is_evaluation_path`).
    - guards: expressions an enclosing test proves non-zero (`if d > 0:`,
      `if d:`, `assert d != 0`, `where(d > 0, n / d, 0)`, after
      `if d == 0: return`), and expressions a `where` condition bounds
      (`where(x > 20, x, log1p(exp(x)))`). A `where` guards the forward
      value only: autodiff still differentiates the discarded branch, and
      its gradient there is 0 * inf = NaN (`masked`).
    """

    def __init__(self, evaluation: bool = False):
        self.no_grad = 0
        self.autodiff = False
        # A metrics or evaluation module: its values are reported, not
        # differentiated (gradient-only rules stay silent there).
        self.evaluation = evaluation
        # > 0 while evaluating a guard: a clamp bound, `maximum(x, eps)`, a
        # denominator, an `eps=` argument (where an absorbed epsilon matters).
        self.guard_position = 0
        # Enclosing tests (node, negated, the `where` function or None), read only when a
        # rule asks: most walks never do, and keying an expression costs an ast.dump.
        self._tests: list[tuple[ast.AST, bool, str | None]] = []

    def enter_function(self, no_grad: bool) -> tuple:
        """A function body is walked once, wherever it is first called: it
        starts with no guards and its own gradient context."""
        saved = (self.no_grad, self.guard_position, self._tests)
        self.no_grad, self.guard_position, self._tests = int(no_grad), 0, []
        return saved

    def leave_function(self, saved: tuple) -> None:
        self.no_grad, self.guard_position, self._tests = saved

    # ------------------------------------------------------------ gradients
    def differentiable(self, qual: str | None = None) -> bool:
        """Can a value computed here (by `qual`, None: a tensor method) carry a gradient?"""
        if self.no_grad or self.evaluation:
            return False
        if qual is not None:
            return N.framework_of(qual) in N.AUTODIFF_ROOTS
        return self.autodiff

    def note_import(self, module: str) -> None:
        if module.split(".", 1)[0] in _AUTODIFF_IMPORTS:
            self.autodiff = True

    # ------------------------------------------------------------ guards
    def nonzero(self, node: ast.AST) -> bool:
        """Is `node` proven non-zero here? `mask.sum()` is when `mask` (any
        element) is."""
        if not self._tests:
            return False
        return _proves(node, self._guards()[0])

    def bounded(self, node: ast.AST) -> bool:
        return bool(self._tests) and expr_key(node) in self._guards()[1]

    def where_guard(self, node: ast.AST) -> tuple[int | None, bool] | None:
        """(line, whether gradients flow) of the `where` that alone keeps `node`
        away from the value it tests (`where(p > 0, log(p), 0)`), else None."""
        if not any(where for _, _, where in self._tests):
            return None
        node = _unscaled(node)
        if _proves(node, self._guards(of_where=False)[0]):
            return None
        for test, negated, where in self._tests:
            if where:
                nz, bd = guards_of(test, negated)
                if _proves(node, set(nz)) or expr_key(node) in bd:
                    return getattr(test, "lineno", None), self.differentiable(where)
        return None

    def masked(self, node: ast.AST) -> int | None:
        """The line of the `where` that guards `node`'s forward value but not
        its gradient (see `where_guard`), else None."""
        guard = self.where_guard(node)
        return guard[0] if guard is not None and guard[1] else None

    def _guards(self, of_where: bool | None = None) -> tuple[set[str], set[str]]:
        """Keys proven non-zero and keys bounded, by every test (None), by
        the `where` tests only (True) or by the others (False)."""
        nonzero: set[str] = set()
        bounded: set[str] = set()
        for test, negated, where in self._tests:
            if of_where is None or bool(where) == of_where:
                nz, bd = guards_of(test, negated)
                nonzero.update(nz)
                bounded.update(bd)
        return nonzero, bounded

    def push(self, test: ast.AST, negated: bool = False, where: str | None = None) -> int:
        """Record that `test` holds (or fails, if `negated`) from here on, as
        the condition of the `where` function named `where`; returns a mark for `pop`."""
        self._tests.append((test, negated, where))
        return len(self._tests) - 1

    def pop(self, mark: int) -> None:
        del self._tests[mark:]


def _unscaled(node: ast.AST) -> ast.AST:
    """`e` of `2 * e` / `e / 2`: a constant factor moves neither 0 nor the sign."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        if const_value(node.left) is not None and isinstance(node.op, ast.Mult):
            return node.right
        if const_value(node.right) is not None:
            return node.left
    return node


def _proves(node: ast.AST, keys: set[str]) -> bool:
    if expr_key(node) in keys:
        return True
    operand = reduced_operand(node)
    return operand is not None and expr_key(operand) in keys


def reduced_operand(node: ast.AST) -> ast.AST | None:
    """`m` of `m.sum(...)` / `sum(m)`, else None."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("sum", "count_nonzero"):
            return node.func.value
        if node.args and isinstance(node.func, (ast.Name, ast.Attribute)):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name in ("sum", "reduce_sum", "count_nonzero"):
                return node.args[0]
    return None


def is_evaluation_path(path: str) -> bool:
    """`metrics/`, `torchmetrics/...`, `eval_utils.py`, `evaluation/`: code that scores a model."""
    parts = path.replace("\\", "/").lower().split("/")
    stem = parts[-1].rsplit(".", 1)[0]
    return any("metric" in p for p in parts) or any(p in ("eval", "evaluation", "evaluate") for p in parts[:-1]) \
        or stem.startswith(("eval_", "evaluate"))


def expr_key(node: ast.AST) -> str:
    """A spelling-independent key for an operand: `d`, `w.sum()`, `x[:, 0]`.
    Casts and views (`.float()`, `.view(-1, 1)`) do not change it."""
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in N.PASSTHROUGH_METHODS
    ):
        node = node.func.value
    return ast.dump(node)


_NONZERO_WHEN_TRUE = {ast.Gt: lambda c: c >= 0, ast.GtE: lambda c: c > 0, ast.NotEq: lambda c: c == 0}
_NONZERO_WHEN_FALSE = {ast.LtE: lambda c: c >= 0, ast.Lt: lambda c: c > 0, ast.Eq: lambda c: c == 0}
_MIRROR = {ast.Gt: ast.Lt, ast.Lt: ast.Gt, ast.GtE: ast.LtE, ast.LtE: ast.GtE, ast.Eq: ast.Eq, ast.NotEq: ast.NotEq}


def guards_of(test: ast.AST, negated: bool = False) -> tuple[list[str], list[str]]:
    """(keys proven non-zero, keys compared with a bound) by `test` being
    true (or false, when `negated`)."""
    nonzero: list[str] = []
    bounded: list[str] = []
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return guards_of(test.operand, not negated)
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And if not negated else ast.Or):
        for value in test.values:
            nz, bd = guards_of(value, negated)
            nonzero += nz
            bounded += bd
        return nonzero, bounded
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, type(test.ops[0]), test.comparators[0]
        c = const_value(right)
        if c is None and const_value(left) is not None:
            left, right, op, c = right, left, _MIRROR.get(op), const_value(left)
        if op not in _MIRROR:  # `in`, `is`: nothing about the value's size
            return nonzero, bounded
        if c is not None:
            table = _NONZERO_WHEN_FALSE if negated else _NONZERO_WHEN_TRUE
            if op in table and table[op](c):
                nonzero.append(expr_key(left))
            bounded.append(expr_key(left))
        elif op in (ast.Gt, ast.Lt, ast.GtE, ast.LtE):
            bounded += [expr_key(left), expr_key(right)]  # `x > threshold`
        return nonzero, bounded
    if not negated and isinstance(test, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
        nonzero.append(expr_key(test))  # `if d:` / `if d.any():` is about `d`
        if isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) and test.func.attr in ("any", "all"):
            nonzero.append(expr_key(test.func.value))
    return nonzero, bounded


def ends_block(body: list[ast.stmt]) -> bool:
    """Does this block always leave (return, raise, continue, break)?"""
    return bool(body) and isinstance(body[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))
