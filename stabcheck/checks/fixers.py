"""Fix builders, one per fixable shape. Each looks at the `ast` nodes a check
saw and returns a `Fix` plan (ops of fix_engine's recipes, located by
position, with the spellings this module's imports allow), or None when the
code is not in a shape that can be rewritten faithfully (then the finding is
reported without a fix). The rewriting itself happens in fix_engine, on the
concrete tree, for the files that get fixed."""

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
_LOG_SIGMOID = {"torch": "torch.nn.functional.logsigmoid", "tensorflow": "tensorflow.math.log_sigmoid",
                "keras": "keras.ops.log_sigmoid", "jax": "jax.nn.log_sigmoid", "scipy": "scipy.special.log_expit"}
_SIGMOID = {"torch": "torch.sigmoid", "tensorflow": "tensorflow.math.sigmoid", "keras": "keras.ops.sigmoid",
            "jax": "jax.nn.sigmoid", "numpy": "scipy.special.expit"}
# Naive softmax: the framework's softmax and the keyword its reduction axis takes.
_SOFTMAX = {"torch": ("torch.softmax", "dim"), "tensorflow": ("tensorflow.nn.softmax", "axis"),
            "keras": ("keras.ops.softmax", "axis"), "jax": ("jax.nn.softmax", "axis"),
            "numpy": ("scipy.special.softmax", "axis")}
# Where a Keras binary cross-entropy takes `from_logits` positionally.
_FROM_LOGITS_AT = {"keras.losses.BinaryCrossentropy": 0, "keras.losses.BinaryFocalCrossentropy": 3}
_FROM_LOGITS_FUNC_AT = 2  # binary_crossentropy(y_true, y_pred, from_logits, ...)


def _is_method(call: ast.Call, qual: str | None) -> bool:
    return qual is None and isinstance(call.func, ast.Attribute)


def _form(call: ast.Call, qual: str | None) -> str:
    """How a one-operand op takes its operand: `x.f(...)` or `f(x, ...)`."""
    return "method" if _is_method(call, qual) else "function"


def _callee_renamed(ctx: FixContext, call: ast.Call, qual: str, new_qual: str):
    """Write `new_qual` the way `call` wrote `qual`: `F.softmax` -> `.log_softmax`
    (a leading dot keeps the call's own receiver)."""
    if isinstance(call.func, ast.Attribute) and qual.rpartition(".")[0] == new_qual.rpartition(".")[0]:
        return "." + new_qual.rpartition(".")[2], ()
    return ctx.spell(new_qual)


def _operand(call: ast.Call, qual: str | None) -> ast.AST:
    """The tensor a one-operand op applies to: `f(x, ...)` or `x.f(...)`."""
    if _is_method(call, qual):
        return call.func.value
    return call.args[0]


def _has_operand(call: ast.Call, qual: str | None) -> bool:
    return _is_method(call, qual) or bool(call.args) and not isinstance(call.args[0], ast.Starred)


def _name_of(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def _plain_log(call: ast.AST) -> bool:
    """A natural log with one operand: `log(x)` or `x.log()`."""
    if not isinstance(call, ast.Call) or _name_of(call) != "log" or call.keywords:
        return False
    return len(call.args) == 1 or not call.args and isinstance(call.func, ast.Attribute)


def _root(qual: str | None) -> str:
    return (N.framework_of(qual) or "torch") if qual else "torch"  # method forms: torch tensors


def log_softmax(ctx: FixContext, log_call: ast.Call, sm_call: ast.Call, sm_qual: str | None, x_node=None):
    """`log(softmax(x, d))` -> `log_softmax(x, d)`; through a name bound to
    the softmax (`p = softmax(x, d)`, then `log(p)`) too, as an unsafe fix."""
    if not _name_of(log_call).endswith("log"):
        return None
    via = ()
    if x_node is not None and x_node is not sm_call:
        binding = _binding(ctx, x_node, sm_call, sm_qual) if _plain_log(log_call) else None
        if binding is None:
            return None
        via = _dropped(ctx, *binding)
    callee, imports = "", ()
    if not _is_method(sm_call, sm_qual):
        target = _LOG_SOFTMAX.get(sm_qual)
        if target is None:
            return None
        callee, imports = _callee_renamed(ctx, sm_call, sm_qual, target)
        if not callee:
            return None
    op = ctx.op("log_softmax", log_call, sm_call, params=(callee or ".log_softmax", "via" if x_node is not None and x_node is not sm_call else ""))
    return Fix("Use log_softmax", UNSAFE if x_node is not None and x_node is not sm_call else SAFE, (op, *via), imports)


def log_of_probability(ctx: FixContext, log_call: ast.Call, x_node: ast.AST, prob):
    """`log(p)` of a sigmoid or softmax output `prob` (a values.Prob)."""
    if prob.src == N.SRC_SIGMOID:
        return log_sigmoid(ctx, log_call, x_node, prob.node, prob.qual, prob.comp)
    if prob.src == N.SRC_SOFTMAX and not prob.comp:
        return log_softmax(ctx, log_call, prob.node, prob.qual, x_node)
    return None


def log_sigmoid(ctx: FixContext, log_call: ast.Call, x_node: ast.AST, sig_call: ast.Call, sig_qual: str | None,
                comp: bool):
    """`log(sigmoid(z))` -> `logsigmoid(z)`; `log(1 - sigmoid(z))` -> `logsigmoid(-z)`."""
    if not _plain_log(log_call) or not isinstance(sig_call, ast.Call) or not _has_operand(sig_call, sig_qual):
        return None
    inner = x_node
    if comp:
        if not (isinstance(x_node, ast.BinOp) and isinstance(x_node.op, ast.Sub)
                and isinstance(x_node.left, ast.Constant) and x_node.left.value == 1):
            return None
        inner = x_node.right
    via = ()
    if inner is not sig_call:  # through a name: `p = sigmoid(z)`, then `log(p)`
        binding = _binding(ctx, inner, sig_call, sig_qual)
        if binding is None:
            return None
        via = _dropped(ctx, *binding)
    target = _LOG_SIGMOID.get(_root(sig_qual).replace("numpy", "scipy"))
    if target is None:
        return None
    callee, imports = ctx.spell(target)
    if not callee:
        return None
    params = (callee, _form(sig_call, sig_qual), "comp" if comp else "", "via" if inner is not sig_call else "")
    op = ctx.op("log_sigmoid", log_call, sig_call, params=params)
    return Fix("Use log-sigmoid", UNSAFE if inner is not sig_call else SAFE, (op, *via), imports)


def drop_activation(ctx: FixContext, arg: ast.AST, act_call: ast.Call, act_qual: str | None, what: str):
    """`loss(softmax(x), y)` -> `loss(x, y)`: the loss applies it itself."""
    if not isinstance(act_call, ast.Call) or not _has_operand(act_call, act_qual):
        return None
    ops = _logits_for(ctx, arg, act_call, act_qual)
    return _fix(f"Pass the logits (drop the {what})", UNSAFE, ops) if ops else None


def _logits_for(ctx: FixContext, arg: ast.AST, act_call: ast.Call, act_qual: str | None):
    """Ops that put the activation's operand where `arg` is: in place when
    `arg` is the activation call, else through the name bound to it (the
    binding goes when that was its only use)."""
    if arg is act_call:
        return (ctx.op("operand", act_call, params=(_form(act_call, act_qual),)),)
    binding = _binding(ctx, arg, act_call, act_qual)
    if binding is None:
        return None
    stmt, only_use = binding
    return (ctx.op("move", arg, _operand(act_call, act_qual)), *_dropped(ctx, stmt, only_use))


def _dropped(ctx: FixContext, stmt: ast.stmt, only_use: bool) -> tuple:
    return (ctx.op("remove_statement", stmt),) if only_use else ()


def _binding(ctx: FixContext, use: ast.AST, value: ast.Call, qual: str | None):
    """(`p = <value>`, whether `use` is p's only read) when `use` reads the
    name bound once to `value` in the same function, and the operand of
    `value` reads the same at `use` as at the binding: nothing in between
    touches a name it reads, and it calls nothing unless it moves with no
    statement in between."""
    stmt = ctx.parent(value)
    if not (isinstance(use, ast.Name) and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
        return None
    target = stmt.targets[0]
    if not (isinstance(target, ast.Name) and target.id == use.id and stmt.value is value):
        return None
    func = stmt
    while func is not None and not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        func = ctx.parent(func)
    if func is None or any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in ast.walk(func)):
        return None
    names = [n for n in ast.walk(func) if isinstance(n, ast.Name) and n.id == use.id]
    if sum(1 for n in names if not isinstance(n.ctx, ast.Load)) != 1:
        return None  # bound once
    operand = _operand(value, qual)
    if not all(isinstance(n, (*_PURE, ast.Call, ast.keyword, ast.Starred)) for n in ast.walk(value)):
        return None
    reads = {n.id for n in ast.walk(operand) if isinstance(n, ast.Name)}
    body = _block_of(ctx, stmt)
    use_stmt = use
    while use_stmt is not None and use_stmt not in body:
        use_stmt = ctx.parent(use_stmt)
    if use_stmt is None or body.index(use_stmt) <= body.index(stmt):
        return None
    between = body[body.index(stmt) + 1:body.index(use_stmt)]
    if any(isinstance(n, ast.Name) and n.id in reads for s in between for n in ast.walk(s)):
        return None
    only_use = len(names) == 2
    if any(isinstance(n, ast.Call) for n in ast.walk(operand)) and (between or not only_use):
        return None  # a call would run at another time, or twice
    return stmt, only_use


def _block_of(ctx: FixContext, stmt: ast.stmt) -> list:
    parent = ctx.parent(stmt)
    for field in ("body", "orelse", "finalbody"):
        block = getattr(parent, field, None)
        if isinstance(block, list) and stmt in block:
            return block
    return [stmt]


def _fix(title: str, applicability: str, ops, imports=()) -> Fix:
    return Fix(title, applicability, tuple(ops), tuple(imports))


def bce_with_logits(ctx: FixContext, loss_call: ast.Call, loss_qual: str, arg: ast.AST, sig_call: ast.Call,
                    sig_qual: str | None):
    """BCE on `sigmoid(z)` -> the with-logits form on `z`."""
    if not isinstance(sig_call, ast.Call) or not _has_operand(sig_call, sig_qual):
        return None
    logits = _logits_for(ctx, arg, sig_call, sig_qual)
    if not logits:
        return None
    safety = SAFE if arg is sig_call else UNSAFE  # through a name: more than one statement
    if loss_qual == "torch.nn.functional.binary_cross_entropy":
        callee, imports = _callee_renamed(ctx, loss_call, loss_qual, loss_qual + "_with_logits")
        if not callee:
            return None
        rename = ctx.op("rename", loss_call.func, params=(callee,))
        return _fix("Use binary_cross_entropy_with_logits", safety, (rename, *logits), imports)
    if loss_qual == "torch.nn.BCELoss" and isinstance(loss_call.func, ast.Call):
        ctor = loss_call.func  # nn.BCELoss(...)(sigmoid(z), y): the module is made inline
        callee, imports = _callee_renamed(ctx, ctor, loss_qual, "torch.nn.BCEWithLogitsLoss")
        if not callee:
            return None
        return _fix("Use BCEWithLogitsLoss", safety, (ctx.op("rename", ctor.func, params=(callee,)), *logits), imports)
    if loss_qual.startswith("keras."):
        call = loss_call.func if isinstance(loss_call.func, ast.Call) else loss_call  # `BinaryCrossentropy()(y, p)`
        at = _FROM_LOGITS_AT.get(loss_qual, _FROM_LOGITS_FUNC_AT)
        if any(kw.arg is None for kw in call.keywords) or any(isinstance(a, ast.Starred) for a in call.args):
            return None
        from_logits = ctx.op("from_logits", call, params=(str(at),))
        return _fix("Pass the logits with from_logits=True", safety, (from_logits, *logits))
    return None


def logsumexp(ctx: FixContext, log_call: ast.Call, sum_call: ast.Call, exp: Exp):
    """`log(sum(exp(x), dim))` -> `logsumexp(x, dim)`."""
    exp_call = exp.node
    sum_is_method = isinstance(sum_call.func, ast.Attribute) and sum_call.args[:1] != [exp_call]
    operand = sum_call.func.value if sum_is_method else (sum_call.args[0] if sum_call.args else None)
    if operand is not exp_call or not _has_operand(exp_call, exp.qual):
        return None
    rest = len(sum_call.args) - (0 if sum_is_method else 1) + len(sum_call.keywords)
    root = _root(exp.qual)
    if root == "torch" and not rest:
        return None  # torch.logsumexp needs a dim
    callee, imports = "", ()
    if exp.qual is not None:
        target = _LOGSUMEXP.get(root)
        if target is None:
            return None
        callee, imports = ctx.spell(target)
        if not callee:
            return None
    params = (callee, "method" if sum_is_method else "function", _form(exp_call, exp.qual))
    return _fix("Use logsumexp", SAFE, (ctx.op("logsumexp", log_call, sum_call, exp_call, params=params),), imports)


def softplus(ctx: FixContext, log_call: ast.Call, x_node: ast.AST, exp: Exp):
    """`log(1 + exp(x))` / `log1p(exp(x))` -> `softplus(x)`."""
    inner = x_node
    if isinstance(inner, ast.BinOp):
        if exp.node not in (inner.left, inner.right):
            return None
    elif isinstance(inner, ast.Call) and inner is not exp.node:
        if not (isinstance(inner.func, ast.Attribute) and inner.func.value is exp.node):
            return None  # `exp(x).add(1)`
    if not _has_operand(exp.node, exp.qual):
        return None
    root = _root(exp.qual)
    target = "numpy.logaddexp" if root == "numpy" else _SOFTPLUS.get(root)
    if target is None:
        return None
    callee, imports = ctx.spell(target)
    if not callee:
        return None
    params = (callee, "logaddexp" if root == "numpy" else "", _form(exp.node, exp.qual))
    return _fix("Use softplus", SAFE, (ctx.op("softplus", log_call, exp.node, params=params),), imports)


def exp_half(ctx: FixContext, sqrt_node: ast.AST, exp: Exp):
    """`sqrt(exp(x))` -> `exp(0.5 * x)`."""
    if not _has_operand(exp.node, exp.qual):
        return None
    return _fix("Use exp(0.5 * x)", SAFE, (ctx.op("exp_half", sqrt_node, exp.node, params=(_form(exp.node, exp.qual),)),))


_PURE = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Load, ast.UnaryOp, ast.BinOp, ast.operator,
         ast.unaryop, ast.Slice, ast.Tuple)


def _pure(node: ast.AST) -> bool:
    """No calls: evaluating it once or twice is the same."""
    return all(isinstance(n, _PURE) for n in ast.walk(node))


def naive_softmax(ctx: FixContext, div: ast.BinOp, num_exp: Exp, sum_call: ast.Call, den_exp: Exp):
    """`exp(x) / sum(exp(x), axis, keepdims=True)` -> `softmax(x, axis)`."""
    if not (isinstance(div, ast.BinOp) and div.left is num_exp.node and div.right is sum_call):
        return None
    if not (_has_operand(num_exp.node, num_exp.qual) and _has_operand(den_exp.node, den_exp.qual)):
        return None
    x, x2 = _operand(num_exp.node, num_exp.qual), _operand(den_exp.node, den_exp.qual)
    if not _pure(x) or ast.dump(x) != ast.dump(x2):
        return None
    root = _root(num_exp.qual)
    if root != _root(den_exp.qual) or root not in _SOFTMAX:
        return None
    qual, axis_kw = _SOFTMAX[root]
    sum_is_method = isinstance(sum_call.func, ast.Attribute) and sum_call.args[:1] != [den_exp.node]
    if (sum_call.func.value if sum_is_method else sum_call.args[:1] and sum_call.args[0]) is not den_exp.node:
        return None
    positional = sum_call.args[0 if sum_is_method else 1:]
    keywords = {kw.arg: kw.value for kw in sum_call.keywords}
    axis = positional[0] if positional else keywords.pop("dim", None) or keywords.pop("axis", None)
    keep = positional[1] if len(positional) > 1 else keywords.pop("keepdim", None) or keywords.pop("keepdims", None)
    if len(positional) > 2 or keywords or any(isinstance(a, ast.Starred) for a in positional):
        return None
    if axis is None:
        if root != "numpy" or keep is not None:
            return None  # a full reduction is softmax only for scipy's axis=None
    elif not (isinstance(keep, ast.Constant) and keep.value is True):
        return None
    callee, imports = ctx.spell(qual)
    if not callee:
        return None
    spans = [div, num_exp.node] + ([axis] if axis is not None else [])
    params = (callee, _form(num_exp.node, num_exp.qual), axis_kw)
    return _fix("Use softmax", SAFE, (ctx.op("softmax", *spans, params=params),), imports)


def naive_sigmoid(ctx: FixContext, div: ast.BinOp, exp: Exp):
    """`1 / (1 + exp(-x))` -> `sigmoid(x)`."""
    if not (isinstance(div, ast.BinOp) and isinstance(div.op, ast.Div) and isinstance(div.right, ast.BinOp)
            and isinstance(div.right.op, ast.Add) and exp.node in (div.right.left, div.right.right)
            and _has_operand(exp.node, exp.qual)):
        return None
    target = _SIGMOID.get(_root(exp.qual))
    if target is None:
        return None
    callee, imports = ctx.spell(target)
    if not callee:
        return None
    params = (callee, _form(exp.node, exp.qual))
    return _fix("Use sigmoid", SAFE, (ctx.op("sigmoid", div, exp.node, params=params),), imports)
