"""Apply fix plans (fixes.py) as libcst transformations of the concrete tree.

Only files that get fixed come here (libcst's parse costs 10x `ast.parse`).
Each op finds its nodes by the positions detection recorded (PositionProvider
spans exclude parentheses, as `ast` does), checks the shape is still the one
the rule saw, and builds the replacement from the original nodes, so
parentheses and the comments inside them travel along. Comments of nodes a
fix discards are re-attached to the replacement; imports go through libcst's
AddImportsVisitor (merged into `from m import a, b`, placed after docstring,
shebang, coding cookie and `__future__`). The result is verified before it
is returned: it parses, every comment is still there, and each rewritten node
is what the rule wanted; a fix that fails is dropped with the reason.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import warnings

with warnings.catch_warnings():  # libcst's metadata package imports a deprecated TypedDict
    warnings.simplefilter("ignore", DeprecationWarning)
    import libcst as cst
    from libcst import metadata as md
    from libcst.codemod import CodemodContext
    from libcst.codemod.visitors import AddImportsVisitor

from stabcheck.fixes import Edit, Fix

_DOTTED = re.compile(r"^\.?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


class Unfixable(Exception):
    """The code is not (or no longer) in the shape the fix rewrites."""


@dataclass
class Result:
    source: str
    applied: list[Fix] = field(default_factory=list)
    dropped: list[tuple[Fix, str]] = field(default_factory=list)


# ------------------------------------------------------------------ locating


@dataclass
class _Tree:
    module: cst.Module
    exprs: dict  # span -> outermost expression node with that span
    stmts: dict  # span -> small statement
    comments: dict  # span -> Comment
    parents: dict  # node -> parent node


@lru_cache(maxsize=4)
def _parse(source: str) -> _Tree:
    """Parse once per text (JSON output asks for each fix of a file)."""
    module = cst.parse_module(source)
    wrapper = md.MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(md.PositionProvider)
    parents = wrapper.resolve(md.ParentNodeProvider)
    exprs: dict = {}
    stmts: dict = {}
    comments: dict = {}
    for node, where in positions.items():
        span = (where.start.line, where.start.column, where.end.line, where.end.column)
        if isinstance(node, cst.BaseExpression):
            exprs.setdefault(span, node)
        elif isinstance(node, cst.BaseSmallStatement):
            stmts.setdefault(span, node)
        elif isinstance(node, cst.Comment):
            comments.setdefault(span, node)
    return _Tree(module, exprs, stmts, comments, dict(parents))


def _expr(tree: _Tree, span, kind=cst.BaseExpression):
    node = tree.exprs.get(tuple(span))
    if not isinstance(node, kind):
        raise Unfixable(f"line {span[0]} is no longer what was checked")
    return node


def _unparen(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.with_changes(lpar=[], rpar=[]) if getattr(node, "lpar", None) else node


def _operand(call: cst.CSTNode, form: str) -> cst.BaseExpression:
    """The operand of a one-operand op: `x.f(...)` or `f(x, ...)`."""
    if not isinstance(call, cst.Call):
        raise Unfixable("not a call any more")
    if form == "method":
        if not isinstance(call.func, cst.Attribute):
            raise Unfixable("not a method call any more")
        return call.func.value
    if not call.args or call.args[0].keyword is not None or call.args[0].star:
        raise Unfixable("the call has no positional operand")
    return call.args[0].value


def _sole_operand(call: cst.Call) -> cst.BaseExpression:
    """`f(x)` -> x, `x.f()` -> x."""
    if len(call.args) == 1 and call.args[0].keyword is None and not call.args[0].star:
        return call.args[0].value
    if not call.args and isinstance(call.func, cst.Attribute):
        return call.func.value
    raise Unfixable("the outer call takes more than its operand")


def _callee(spelling: str, old_func: cst.BaseExpression | None = None) -> cst.BaseExpression:
    """A dotted name; `.name` renames the last part of `old_func` (keeps `F.`)."""
    if not _DOTTED.match(spelling):
        raise Unfixable(f"not a name: {spelling!r}")
    if spelling.startswith("."):
        if not isinstance(old_func, cst.Attribute):
            raise Unfixable("the callee is not an attribute")
        return old_func.with_changes(attr=cst.Name(spelling[1:]))
    return cst.parse_expression(spelling)


def _arg(value: cst.BaseExpression, keyword: str | None = None) -> cst.Arg:
    if keyword is None:
        return cst.Arg(_unparen(value) if _bare_ok_as_arg(value) else value)
    return cst.Arg(value, keyword=cst.Name(keyword), equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))


def _bare_ok_as_arg(node: cst.BaseExpression) -> bool:
    """Parentheses around it are redundant in an argument list."""
    return not isinstance(node, (cst.Tuple, cst.GeneratorExp, cst.Yield, cst.NamedExpr, cst.Lambda))


_ATOMS = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString,
          cst.ConcatenatedString, cst.FormattedString, cst.List, cst.Dict, cst.Set, cst.ListComp, cst.SetComp,
          cst.DictComp)


def _atom(node: cst.BaseExpression) -> cst.BaseExpression:
    """The node as an operand of an operator or an attribute access."""
    if isinstance(node, _ATOMS) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def _call(func: cst.BaseExpression, args) -> cst.Call:
    return cst.Call(func=func, args=list(args))


def _half_times(x: cst.BaseExpression) -> cst.BinaryOperation:
    return cst.BinaryOperation(cst.Float("0.5"), cst.Multiply(), _atom(x))


def _negated(x: cst.BaseExpression) -> cst.BaseExpression:
    """`-x`; `-(-x)` written as `x`."""
    inner = _unparen(x) if x.lpar else x
    if isinstance(inner, cst.UnaryOperation) and isinstance(inner.operator, cst.Minus):
        return inner.expression
    return cst.UnaryOperation(cst.Minus(), _atom(x))


def _is_one(node: cst.BaseExpression) -> bool:
    return isinstance(node, (cst.Integer, cst.Float)) and float(node.value) == 1.0


# ------------------------------------------------------------------ recipes
# Each takes the located nodes and the op's params, checks the shape, and
# returns (the function that rewrites the updated target, the callee names
# the rewritten node may have).


def _through(inside, target, via: bool) -> bool:
    """`inside` is `target` itself, or (`via`) the name bound to it."""
    return isinstance(inside, cst.Name) if via else inside is target


def _r_log_softmax(tree, nodes, params):
    log, sm = nodes
    if not _through(_sole_operand(log), sm, params[1:] == ("via",)):
        raise Unfixable("the log's operand is not the softmax call itself")
    new = sm.with_changes(func=_callee(params[0], sm.func), lpar=[], rpar=[])
    return _rebuilt(log, new), ("log_softmax",)


def _r_logsumexp(tree, nodes, params):
    log, red, exp = nodes
    callee, sum_form, exp_form = params
    if _sole_operand(log) is not red:
        raise Unfixable("the log's operand is not the sum itself")
    if sum_form == "method":
        if not isinstance(red.func, cst.Attribute) or red.func.value is not exp:
            raise Unfixable("the sum is not of the exp")
        rest = list(red.args)
    else:
        if not red.args or red.args[0].value is not exp:
            raise Unfixable("the sum is not of the exp")
        rest = list(red.args[1:])
    x = _operand(exp, exp_form)
    if callee:
        new = _call(_callee(callee), [_arg(x), *rest])
    else:
        new = _call(cst.Attribute(_atom(x), cst.Name("logsumexp")), rest)
    return _rebuilt(log, new), ("logsumexp", "reduce_logsumexp")


def _r_softplus(tree, nodes, params):
    log, exp = nodes
    callee, logaddexp, exp_form = params
    inside = _sole_operand(log)
    if not (inside is exp or _is_sum_with_one(inside, exp) or _is_add_one(inside, exp)):
        raise Unfixable("the log's operand is not 1 + exp(x)")
    x = _operand(exp, exp_form)
    args = [cst.Arg(cst.Integer("0")), _arg(x)] if logaddexp else [_arg(x)]
    return _rebuilt(log, _call(_callee(callee), args)), ("softplus", "logaddexp")


def _is_sum_with_one(node, exp) -> bool:
    return (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add)
            and ((node.left is exp and _is_one(node.right)) or (node.right is exp and _is_one(node.left))))


def _is_add_one(node, exp) -> bool:
    """`exp(x).add(1)`."""
    return (isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.value is exp
            and node.func.attr.value == "add" and len(node.args) == 1 and _is_one(node.args[0].value))


def _r_exp_half(tree, nodes, params):
    sqrt, exp = nodes
    if _sole_operand(sqrt) is not exp:
        raise Unfixable("the sqrt's operand is not the exp itself")
    x = _operand(exp, params[0])
    if params[0] == "method":
        new = _call(cst.Attribute(_atom(_half_times(x)), exp.func.attr), [])
    else:
        new = exp.with_changes(args=[_arg(_half_times(x))], lpar=[], rpar=[])
    return _rebuilt(sqrt, new), ("exp",)


def _r_log_sigmoid(tree, nodes, params):
    log, sig = nodes
    callee, sig_form, comp, via = params
    inside = _sole_operand(log)
    if comp:
        if not (isinstance(inside, cst.BinaryOperation) and isinstance(inside.operator, cst.Subtract)
                and _is_one(inside.left)):
            raise Unfixable("the log's operand is not 1 - sigmoid(z)")
        inside = inside.right
    if not _through(inside, sig, bool(via)):
        raise Unfixable("the log's operand is not the sigmoid call itself")
    z = _operand(sig, sig_form)
    return _rebuilt(log, _call(_callee(callee), [_arg(_negated(z) if comp else z)])), (
        "logsigmoid", "log_sigmoid", "log_expit")


def _r_softmax(tree, nodes, params):
    div, num_exp = nodes[:2]
    axis = nodes[2] if len(nodes) > 2 else None
    callee, exp_form, axis_kw = params
    if not (isinstance(div, cst.BinaryOperation) and isinstance(div.operator, cst.Divide) and div.left is num_exp):
        raise Unfixable("not exp(x) / sum(exp(x)) any more")
    x = _operand(num_exp, exp_form)
    args = [_arg(x)] + ([_arg(axis, axis_kw)] if axis is not None else [])
    return _rebuilt(div, _call(_callee(callee), args)), ("softmax",)


def _r_sigmoid(tree, nodes, params):
    div, exp = nodes
    callee, exp_form = params
    if not (isinstance(div, cst.BinaryOperation) and isinstance(div.operator, cst.Divide) and _is_one(div.left)
            and _is_sum_with_one(div.right, exp)):
        raise Unfixable("not 1 / (1 + exp(-x)) any more")
    return _rebuilt(div, _call(_callee(callee), [_arg(_negated(_operand(exp, exp_form)))])), ("sigmoid", "expit")


def _r_operand(tree, nodes, params):
    (act,) = nodes
    return _rebuilt(act, _operand(act, params[0])), None


def _r_move(tree, nodes, params):
    use, value = nodes
    return _rebuilt(use, value), None


def _r_rename(tree, nodes, params):
    (func,) = nodes
    return _rebuilt(func, _callee(params[0], func)), ("binary_cross_entropy_with_logits", "BCEWithLogitsLoss")


def _r_from_logits(tree, nodes, params):
    (call,) = nodes
    if not isinstance(call, cst.Call) or any(a.star for a in call.args):
        raise Unfixable("the loss call has *args or **kwargs")
    at = int(params[0])

    def edit(updated: cst.Call) -> cst.Call:
        args = list(updated.args)
        positional = [i for i, a in enumerate(args) if a.keyword is None]
        true = cst.Name("True")
        if len(positional) > at:  # passed positionally: `BinaryCrossentropy(False, 0.1)`
            i = positional[at]
            args[i] = args[i].with_changes(value=true)
        else:
            named = [i for i, a in enumerate(args) if a.keyword is not None and a.keyword.value == "from_logits"]
            if named:
                args[named[0]] = args[named[0]].with_changes(value=true)
            else:
                last = args[-1].comma if args else None
                if isinstance(last, cst.Comma) and last.whitespace_after.empty:  # `f(a, b,)`
                    args[-1] = args[-1].with_changes(comma=last.with_changes(whitespace_after=cst.SimpleWhitespace(" ")))
                args.append(_arg(true, "from_logits"))
        return updated.with_changes(args=args)

    return edit, ("from_logits",)


def _r_noqa(tree, nodes, params):
    (comment,) = nodes
    old, new = params
    if comment.value != old or (new and (not new.startswith("#") or "\n" in new or "\r" in new)):
        raise Unfixable("the noqa comment changed")
    return (lambda updated: cst.Comment(new) if new else cst.RemovalSentinel.REMOVE), None


def _r_remove_statement(tree, nodes, params):
    (stmt,) = nodes
    line = tree.parents.get(stmt)
    if not isinstance(line, cst.SimpleStatementLine) or len(line.body) != 1:
        raise Unfixable("the statement shares its line")
    block = tree.parents.get(line)
    body = list(getattr(block, "body", ()))
    if line not in body or body.index(line) == len(body) - 1:
        raise Unfixable("the statement is the last of its block")
    return None, None  # done by the block (see _Rewriter._block)


RECIPES: dict[str, tuple[Callable, str]] = {
    # kind: (recipe, what its spans locate: "expr", "stmt" or "comment")
    "log_softmax": (_r_log_softmax, "expr"),
    "logsumexp": (_r_logsumexp, "expr"),
    "softplus": (_r_softplus, "expr"),
    "exp_half": (_r_exp_half, "expr"),
    "log_sigmoid": (_r_log_sigmoid, "expr"),
    "softmax": (_r_softmax, "expr"),
    "sigmoid": (_r_sigmoid, "expr"),
    "operand": (_r_operand, "expr"),
    "move": (_r_move, "expr"),
    "rename": (_r_rename, "expr"),
    "from_logits": (_r_from_logits, "expr"),
    "noqa": (_r_noqa, "comment"),
    "remove_statement": (_r_remove_statement, "stmt"),
}


def _rebuilt(target: cst.BaseExpression, new: cst.BaseExpression):
    """A replacement for `target` built from original nodes; any comment of
    `target` that `new` no longer holds is re-attached to it."""
    if target.lpar:
        parens = [*target.lpar, *target.rpar]
        keep = not isinstance(new, _ATOMS) or any(_comments(p) for p in parens)  # `(sigmoid(z))`: redundant
        new = new.with_changes(lpar=target.lpar if keep else [], rpar=target.rpar if keep else [])
    lost = _comments(target) - _comments(new)
    if lost:
        new = _with_comments(new, [c for c, n in lost.items() for _ in range(n)])
    return lambda updated: new


def _with_comments(node: cst.BaseExpression, comments: list[str]) -> cst.BaseExpression:
    """`f(  # c\\n    x)`: comments after the opening parenthesis of the call
    (or of parentheses added around the node)."""
    lines = [cst.EmptyLine(indent=True, whitespace=cst.SimpleWhitespace("    "), comment=cst.Comment(c))
             for c in comments[1:]]
    ws = cst.ParenthesizedWhitespace(
        first_line=cst.TrailingWhitespace(cst.SimpleWhitespace("  "), cst.Comment(comments[0])),
        empty_lines=lines, indent=True, last_line=cst.SimpleWhitespace("    "))
    if isinstance(node, cst.Call) and isinstance(node.whitespace_before_args, cst.SimpleWhitespace):
        return node.with_changes(whitespace_before_args=ws)
    return node.with_changes(lpar=[cst.LeftParen(whitespace_after=ws), *node.lpar], rpar=[*node.rpar, cst.RightParen()])


class _CommentCounter(cst.CSTVisitor):
    def __init__(self):
        self.found: Counter = Counter()

    def visit_Comment(self, node: cst.Comment) -> None:
        self.found[node.value] += 1


def _comments(node: cst.CSTNode) -> Counter:
    counter = _CommentCounter()
    node.visit(counter)
    return counter.found


# ------------------------------------------------------------------ applying


_FREE_CONTEXT = (cst.Arg, cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Return, cst.Expr, cst.Element)


class _Rewriter(cst.CSTTransformer):
    def __init__(self, tree: _Tree, edits: dict, removals: set, moved: list):
        super().__init__()
        self.tree = tree
        self.edits = edits  # original node -> [rewrite(updated) -> new]
        self.removals = removals  # SimpleStatementLines to remove
        self.moved = moved  # nodes moved out of a removed line: their comments travel with them
        self.results: dict = {}  # original target -> what replaced it
        # Only the way down to a target is walked (a file's other nodes stay as they are).
        self.paths: set = set()
        for node in [*edits, *removals]:
            while node is not None and node not in self.paths:
                self.paths.add(node)
                node = tree.parents.get(node)

    def on_visit(self, node) -> bool:
        return node in self.paths

    def on_leave(self, original, updated):
        for rewrite in self.edits.get(original, ()):
            new = rewrite(updated)
            if isinstance(new, cst.BaseExpression) and isinstance(original, cst.BaseExpression):
                new = self._parenthesized(original, new)
            self.results[original] = updated = new
        if isinstance(updated, (cst.TrailingWhitespace, cst.EmptyLine)) and original.comment in self.edits:
            if updated.comment is None:  # a noqa comment removed: its line or its whitespace goes too
                return cst.RemovalSentinel.REMOVE if isinstance(updated, cst.EmptyLine) else updated.with_changes(
                    whitespace=cst.SimpleWhitespace(""))
        if isinstance(updated, (cst.Module, cst.IndentedBlock)) and self.removals:
            updated = self._block(original, updated)
        return updated

    def _parenthesized(self, original, new):
        """Parentheses where the replacement's precedence needs them."""
        if new.lpar or isinstance(new, _ATOMS):
            return new
        parent = self.tree.parents.get(original)
        if isinstance(parent, _FREE_CONTEXT) and not isinstance(new, (cst.Tuple, cst.GeneratorExp)):
            return new
        return new.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])

    def _block(self, original, updated):
        """Drop the removed statement lines; their comments go to the next line."""
        body, pending = [], []
        for old, new in zip(original.body, updated.body):
            if old in self.removals:
                pending.extend(old.leading_lines)
                inside = _comments(old.with_changes(leading_lines=[]))
                for node in self.moved:
                    if _within(self.tree, node, old):
                        inside -= _comments(node)
                pending.extend(cst.EmptyLine(comment=cst.Comment(c)) for c, n in inside.items() for _ in range(n))
                continue
            if pending:
                new = new.with_changes(leading_lines=[*pending, *new.leading_lines])
                pending = []
            body.append(new)
        return updated.with_changes(body=body)


def _within(tree: _Tree, node, ancestor) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = tree.parents.get(node)
    return False


def _span_range(span):
    return (span[0], span[1]), (span[2], span[3])


def _select(fixes: list[Fix]) -> list[Fix]:
    """The fixes that can go in together: in order of position, each one
    whose nodes (rewritten or read) overlap none already chosen (the others
    wait for the next pass)."""
    taken: list = []
    chosen = []
    for fix in sorted(fixes, key=lambda f: min(_span_range(op.spans[0]) for op in f.ops) if f.ops else ((0, 0), (0, 0))):
        ranges = [_span_range(span) for op in fix.ops for span in op.spans]
        if not ranges or any(a < te and ts < b for a, b in ranges for ts, te in taken):
            continue
        taken.extend(ranges)
        chosen.append(fix)
    return chosen


def _plan(tree: _Tree, fixes: list[Fix]):
    edits: dict = {}
    removals: set = set()
    moved: list = []
    wants: list = []  # (fix, original target, callee names)
    for fix in fixes:
        for op in fix.ops:
            recipe, locates = RECIPES.get(op.kind, (None, None))
            if recipe is None or not op.spans:
                raise Unfixable(f"unknown fix step {op.kind!r}")
            if locates == "stmt":
                nodes = [tree.stmts.get(tuple(op.spans[0]))]
                if nodes[0] is None:
                    raise Unfixable(f"line {op.spans[0][0]} is no longer what was checked")
            elif locates == "comment":
                nodes = [tree.comments.get(tuple(op.spans[0]))]
                if nodes[0] is None:
                    raise Unfixable(f"no comment at line {op.spans[0][0]} any more")
            else:
                nodes = [_expr(tree, s) for s in op.spans]
            rewrite, names = recipe(tree, nodes, op.params)
            moved.extend(nodes[1:])  # read from elsewhere: maybe out of a removed line
            if locates == "stmt":
                removals.add(tree.parents[nodes[0]])
                continue
            edits.setdefault(nodes[0], []).append(rewrite)
            if names:
                wants.append((fix, nodes[0], names))
    return edits, removals, moved, wants


def _region(source: str, fixes: list[Fix]) -> tuple[int, int] | None:
    """The top-level statements (first line, last line) that hold every span
    of `fixes`, when rewriting just them saves work: libcst's parse with
    positions costs ~3 ms a line, so a 50,000-line file took minutes for one
    fix. None: rewrite the whole file (small files, imports to add, or spans
    that reach the module's head)."""
    lines = source.count("\n")
    if lines < _WHOLE_FILE_LINES or any(fix.imports for fix in fixes):
        return None
    rows = [r for fix in fixes for op in fix.ops for span in op.spans for r in (span[0], span[2])]
    if not rows:
        return None
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError, RecursionError):
        return None
    lo, hi = min(rows), max(rows)
    first = last = None
    for stmt in body:
        start = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", [])])
        if start <= lo <= stmt.end_lineno or (first is None and start > lo):
            first = start if first is None else first
        if start <= hi:
            last = stmt.end_lineno
    if first is None or last is None or last < first or (first, last) == (1, lines):
        return None
    return first, last


_WHOLE_FILE_LINES = 2000


def _shifted(fix: Fix, rows: int) -> Fix:
    """`fix` with its spans moved `rows` lines up."""
    ops = tuple(op._replace(spans=tuple((a - rows, b, c - rows, d) for a, b, c, d in op.spans)) for op in fix.ops)
    return fix._replace(ops=ops)


def _attempt(source: str, fixes: list[Fix], accept=None) -> tuple[str | None, str]:
    """The source with all `fixes` applied and verified, or (None, why)."""
    region = _region(source, fixes)
    if region is not None:
        # Rewrite only the statements the fixes touch, then verify the whole file.
        first, last = region
        lines = source.splitlines(keepends=True)
        head, middle, tail = "".join(lines[:first - 1]), "".join(lines[first - 1:last]), "".join(lines[last:])
        part, why = _attempt_whole(middle, [_shifted(fix, first - 1) for fix in fixes])  # verified there
        if part is None:
            return None, why
        new = head + part + tail
        try:
            ast.parse(new)  # and the whole file still parses
        except (SyntaxError, ValueError, RecursionError) as exc:
            return None, f"the fixed file would not parse ({exc})"
        return _accepted((new, ""), accept)
    return _attempt_whole(source, fixes, accept)


def _accepted(result: tuple[str | None, str], accept) -> tuple[str | None, str]:
    new, why = result
    if new is not None and accept is not None:
        why = accept(new)
        if why:
            return None, why
    return new, why


def _attempt_whole(source: str, fixes: list[Fix], accept=None) -> tuple[str | None, str]:
    try:
        tree = _parse(source)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as exc:
        return None, f"libcst cannot parse the file ({type(exc).__name__})"
    try:
        edits, removals, moved, wants = _plan(tree, fixes)
        rewriter = _Rewriter(tree, edits, removals, moved)
        module = tree.module.visit(rewriter)
        imports = sorted({q for fix in fixes for q in fix.imports})
        if imports:
            context = CodemodContext()
            for qual in imports:
                if not _DOTTED.match(qual) or qual.startswith(".") or "." not in qual:
                    raise Unfixable(f"not an importable name: {qual!r}")
                mod, _, name = qual.rpartition(".")
                AddImportsVisitor.add_needed_import(context, mod, name)
            module = AddImportsVisitor(context).transform_module(module)
        new = module.code
    except Unfixable as exc:
        return None, str(exc)
    except (cst.CSTValidationError, cst.ParserSyntaxError, RecursionError, TypeError, ValueError, AttributeError,
            IndexError, KeyError) as exc:  # a plan that does not fit the tree: never a traceback
        return None, f"libcst could not build the fix ({type(exc).__name__}: {exc})"
    wanted = [(names, module.code_for_node(rewriter.results[t])) for _, t, names in wants]
    return _accepted(_verify(source, new, fixes, wanted), accept)


def _verify(old: str, new: str, fixes, wants) -> tuple[str | None, str]:
    try:
        new_tree = ast.parse(new)
    except (SyntaxError, ValueError, RecursionError) as exc:
        return None, f"the fixed file would not parse ({exc})"
    del new_tree
    noqa = [op.params for fix in fixes for op in fix.ops if op.kind == "noqa"]
    before, after = _file_comments(old), _file_comments(new)
    for old_comment, new_comment in noqa:
        before[old_comment] -= 1
        if new_comment:
            after[new_comment] -= 1
    if +before != +after:
        lost, extra = sorted((+before - +after).elements()), sorted((+after - +before).elements())
        return None, f"the fix would lose a comment: {lost[0]}" if lost else f"the fix would repeat a comment: {extra[0]}"
    for names, code in wants:
        if not _is_wanted(code, names):
            return None, f"the rewritten code is not what the rule wants: {code.strip()[:60]!r}"
    return new, ""


def _is_wanted(code: str, names) -> bool:
    """The rewritten node is a call of one of `names` (`from_logits`: passes
    from_logits=True)."""
    try:
        node = ast.parse("(\n" + code + "\n)", mode="eval").body
    except (SyntaxError, ValueError, RecursionError):
        return False
    if isinstance(node, ast.Call) and names == ("from_logits",):
        return any(kw.arg == "from_logits" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                   for kw in node.keywords) or any(isinstance(a, ast.Constant) and a.value is True for a in node.args)
    func = node.func if isinstance(node, ast.Call) else node  # `rename` rewrites the callee alone
    last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return last in names


def _file_comments(source: str) -> Counter:
    from stabcheck.suppress import _comments

    return Counter(text for _, _, text in _comments(source))


def apply(source: str, fixes: list[Fix], accept: Callable[[str], str | None] | None = None) -> Result:
    """Apply what can go in together; a fix that fails alone is dropped with
    its reason, one that only fails with others waits for the next pass.
    `accept(new_source)` may veto a result (the reason, or None)."""
    chosen = _select(fixes)
    if not chosen:
        return Result(source)
    new, why = _attempt(source, chosen, accept)
    if new is not None:
        return Result(new, chosen)
    result = Result(source)
    good = []
    for fix in chosen:
        alone, why = _attempt(source, [fix], accept) if len(chosen) > 1 else (None, why)
        if alone is None:
            result.dropped.append((fix, why))
        else:
            good.append(fix)
    for batch in (good, good[:1]):
        if batch:
            new, _ = _attempt(source, batch, accept)
            if new is not None:
                result.source, result.applied = new, batch
                break
    return result


def edits(source: str, fix: Fix) -> list[Edit] | None:
    """The fix as edits of `source` (for JSON output), or None if it cannot
    be applied."""
    result = apply(source, [fix])
    if not result.applied:
        return None
    return diff_edits(source, result.source)


def diff_edits(old: str, new: str) -> list[Edit]:
    """Edits turning `old` into `new`: the changed lines, less what they
    share up to a word boundary before and up to the line end after."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    starts = [0]
    for line in a:
        starts.append(starts[-1] + len(line))
    # Lines shared at both ends are skipped first: a fix changes a few lines,
    # and matching a long file line by line is what cost the time.
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(None, a[head:len(a) - tail], b[head:len(b) - tail], autojunk=False)
    out = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        start, end, content = starts[i1], starts[i2], "".join(b[j1:j2])
        removed = old[start:end]
        lead = 0
        while lead < min(len(removed), len(content)) and removed[lead] == content[lead]:
            lead += 1
        while lead and (removed[lead - 1].isalnum() or removed[lead - 1] in "_."):
            lead -= 1
        trail = 0
        while (trail < min(len(removed), len(content)) - lead and removed[-1 - trail] == content[-1 - trail]
               and removed[-1 - trail].isspace()):
            trail += 1
        out.append(Edit(start + lead, end - trail, content[lead:len(content) - trail]))
    return out
