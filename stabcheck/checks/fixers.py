"""Fix builders, one per fixable shape. Each returns a `Fix` or None when
the code is not in a shape it can rewrite faithfully (then the finding is
reported without a fix)."""

from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.fixes import SAFE, UNSAFE, Fix, FixContext
from stabcheck.values import Exp

# softmax -> log_softmax under the same parent module.
_LOG_SOFTMAX = {
    "torch.nn.functional.softmax": "torch.nn.functional.log_softmax",
    "torch.softmax": "torch.log_softmax",
    "torch.special.softmax": "torch.special.log_softmax",
    "tensorflow.nn.softmax": "tensorflow.nn.log_softmax",
    "tensorflow.math.softmax": "tensorflow.math.log_softmax",
    "keras.ops.softmax": "keras.ops.log_softmax",
    "keras.activations.softmax": "keras.activations.log_softmax",
    "jax.nn.softmax": "jax.nn.log_softmax",
    "scipy.special.softmax": "scipy.special.log_softmax",
}
_LOGSUMEXP = {"torch": "torch.logsumexp", "tensorflow": "tensorflow.reduce_logsumexp", "keras": "keras.ops.logsumexp",
              "jax": "jax.nn.logsumexp", "numpy": "scipy.special.logsumexp"}
_SOFTPLUS = {"torch": "torch.nn.functional.softplus", "tensorflow": "tensorflow.math.softplus",
             "keras": "keras.ops.softplus", "jax": "jax.nn.softplus"}


def _is_method(call: ast.Call, qual: str | None) -> bool:
    return qual is None and isinstance(call.func, ast.Attribute)


def _callee_renamed(ctx: FixContext, call: ast.Call, qual: str, new_qual: str):
    """Write `new_qual` the way `call` wrote `qual`: `F.softmax` -> `F.log_softmax`."""
    if isinstance(call.func, ast.Attribute) and qual.rpartition(".")[0] == new_qual.rpartition(".")[0]:
        return ctx.text(call.func.value) + "." + new_qual.rpartition(".")[2], ()
    return ctx.spell(new_qual)


def _operand(call: ast.Call, qual: str | None) -> ast.AST:
    """The tensor a one-operand op applies to: `f(x, ...)` or `x.f(...)`."""
    if _is_method(call, qual):
        return call.func.value
    return call.args[0]


def _fix(title: str, applicability: str, *edits) -> Fix:
    return Fix(title, applicability, tuple(edits))


def log_softmax(ctx: FixContext, log_call: ast.Call, sm_call: ast.Call, sm_qual: str | None):
    """`log(softmax(x, d))` -> `log_softmax(x, d)`."""
    log_name = log_call.func.attr if isinstance(log_call.func, ast.Attribute) else getattr(log_call.func, "id", "")
    if log_name not in ("log",) and not log_name.endswith("log"):
        return None
    if _is_method(sm_call, sm_qual):
        content = ctx.text(sm_call.func.value) + ".log_softmax(" + ", ".join(ctx.call_args(sm_call)) + ")"
        extra = ()
    else:
        target = _LOG_SOFTMAX.get(sm_qual)
        if target is None:
            return None
        callee, extra = _callee_renamed(ctx, sm_call, sm_qual, target)
        if not callee:
            return None
        content = callee + "(" + ", ".join(ctx.call_args(sm_call)) + ")"
    return _fix("Use log_softmax", SAFE, ctx.replace(log_call, content), *extra)


def drop_activation(ctx: FixContext, arg: ast.AST, act_call: ast.Call, act_qual: str | None, what: str):
    """`loss(softmax(x), y)` -> `loss(x, y)`: the loss applies it itself."""
    if not isinstance(act_call, ast.Call) or arg is not act_call:
        return None
    if not _is_method(act_call, act_qual) and not act_call.args:
        return None
    return _fix(f"Pass the logits (drop the {what})", UNSAFE, ctx.replace(arg, ctx.text(_operand(act_call, act_qual))))


def bce_with_logits(ctx: FixContext, loss_call: ast.Call, loss_qual: str, arg: ast.AST, sig_call: ast.Call,
                    sig_qual: str | None):
    """BCE on `sigmoid(z)` -> the with-logits form on `z`."""
    if arg is not sig_call or (not _is_method(sig_call, sig_qual) and not sig_call.args):
        return None
    logits = ctx.replace(arg, ctx.text(_operand(sig_call, sig_qual)))
    if loss_qual == "torch.nn.functional.binary_cross_entropy":
        callee, extra = _callee_renamed(ctx, loss_call, loss_qual, loss_qual + "_with_logits")
        if not callee:
            return None
        return _fix("Use binary_cross_entropy_with_logits", SAFE, ctx.replace(loss_call.func, callee), logits, *extra)
    if loss_qual == "torch.nn.BCELoss" and isinstance(loss_call.func, ast.Call):
        ctor = loss_call.func  # nn.BCELoss(...)(sigmoid(z), y): the module is made inline
        callee, extra = _callee_renamed(ctx, ctor, loss_qual, "torch.nn.BCEWithLogitsLoss")
        if not callee:
            return None
        return _fix("Use BCEWithLogitsLoss", SAFE, ctx.replace(ctor.func, callee), logits, *extra)
    if loss_qual.startswith("keras."):
        title = "Pass the logits with from_logits=True"
        if isinstance(loss_call.func, ast.Call):  # `BinaryCrossentropy()(y, sigmoid(z))`
            edit = _with_from_logits(ctx, loss_call.func)
            return _fix(title, SAFE, edit, logits) if edit else None
        edit = _with_from_logits(ctx, loss_call, arg, ctx.text(_operand(sig_call, sig_qual)))
        return _fix(title, SAFE, edit) if edit else None
    return None


def _with_from_logits(ctx: FixContext, call: ast.Call, arg: ast.AST | None = None, arg_text: str = ""):
    """The call rewritten with `from_logits=True` (and `arg` replaced)."""
    if any(kw.arg is None for kw in call.keywords) or any(isinstance(a, ast.Starred) for a in call.args):
        return None
    parts = [arg_text if a is arg else ctx.text(a) for a in call.args]
    for kw in call.keywords:
        if kw.arg == "from_logits":
            continue
        parts.append(f"{kw.arg}={arg_text}" if kw.value is arg else ctx.text(kw))
    parts.append("from_logits=True")
    return ctx.replace(call, ctx.text(call.func) + "(" + ", ".join(parts) + ")")


def logsumexp(ctx: FixContext, log_call: ast.Call, sum_call: ast.Call, exp: Exp):
    """`log(sum(exp(x), dim))` -> `logsumexp(x, dim)`."""
    exp_call = exp.node
    sum_is_method = isinstance(sum_call.func, ast.Attribute) and sum_call.args[:1] != [exp_call]
    operand = sum_call.func.value if sum_is_method else (sum_call.args[0] if sum_call.args else None)
    if operand is not exp_call:
        return None
    x = _operand(exp_call, exp.qual)
    rest = ctx.call_args(sum_call, 0 if sum_is_method else 1)
    root = N.framework_of(exp.qual) if exp.qual else "torch"
    if root == "torch" and not rest:
        return None  # torch.logsumexp needs a dim
    if exp.qual is None:
        content = ctx.paren(x) + ".logsumexp(" + ", ".join(rest) + ")"
        return _fix("Use logsumexp", SAFE, ctx.replace(log_call, content))
    target = _LOGSUMEXP.get(root)
    if target is None:
        return None
    callee, extra = ctx.spell(target)
    if not callee:
        return None
    content = callee + "(" + ", ".join([ctx.text(x), *rest]) + ")"
    return _fix("Use logsumexp", SAFE, ctx.replace(log_call, content), *extra)


def softplus(ctx: FixContext, log_call: ast.Call, x_node: ast.AST, exp: Exp):
    """`log(1 + exp(x))` / `log1p(exp(x))` -> `softplus(x)`."""
    inner = x_node
    if isinstance(inner, ast.BinOp):
        if exp.node not in (inner.left, inner.right):
            return None
    elif isinstance(inner, ast.Call) and inner is not exp.node:
        if not (isinstance(inner.func, ast.Attribute) and inner.func.value is exp.node):
            return None  # `exp(x).add(1)`
    x = ctx.text(_operand(exp.node, exp.qual))
    root = N.framework_of(exp.qual) if exp.qual else "torch"
    if root == "numpy":
        callee, extra = ctx.spell("numpy.logaddexp")
        content = f"{callee}(0, {x})"
    else:
        target = _SOFTPLUS.get(root)
        if target is None:
            return None
        callee, extra = ctx.spell(target)
        content = f"{callee}({x})"
    if not callee:
        return None
    return _fix("Use softplus", SAFE, ctx.replace(log_call, content), *extra)


def exp_half(ctx: FixContext, sqrt_node: ast.AST, exp: Exp):
    """`sqrt(exp(x))` -> `exp(0.5 * x)`."""
    call = exp.node
    x = _operand(call, exp.qual)
    if _is_method(call, exp.qual):
        content = f"(0.5 * {ctx.paren(x)}).exp()"
    else:
        content = f"{ctx.text(call.func)}(0.5 * {ctx.paren(x)})"
    return _fix("Use exp(0.5 * x)", SAFE, ctx.replace(sqrt_node, content))
