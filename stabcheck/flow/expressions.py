"""Expression values: names, attributes, arithmetic, division and sqrt."""

from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.flow.facts import named_max, named_mean, negated, sign_of_product, sign_of_sum, square_of
from stabcheck.flow.scopes import Instance, Scope, merge
from stabcheck.flow.syntax import const_value, float32, number, numeric_range, target_key
from stabcheck.values import (
    TENSOR_VALUES, Const, Cosine, Delta, Diff, Exp, Guarded, LogOf, NonPos, OnePlusExp, Prob, Qual, Record, Red, Shifted,
    Tup,
)

_PASSTHROUGH_ATTRS = frozenset({"data", "T", "mT", "real", "values"})


class ExpressionWalker:
    # ------------------------------------------------------------ expressions
    def expr(self, node: ast.AST | None):
        if node is None:
            return None
        t = type(node)
        if t is ast.Name:
            return self.scope.lookup(node.id)
        if t is ast.Call:
            return self._call(node)
        if t is ast.Attribute:
            return self._attribute(node)
        if t is ast.Constant:
            v = const_value(node)  # None past float range (`10**400` written out)
            return None if v is None else Const(v)
        if t is ast.BinOp:
            return self._binop(node, node.left, node.op, node.right)
        if t is ast.Subscript:
            val = self.expr(node.value)
            self.expr(node.slice)
            if isinstance(val, Record):
                key = node.slice
                return val.items.get(key.value) if isinstance(key, ast.Constant) and isinstance(key.value, str) else None
            if isinstance(val, Tup):
                idx = node.slice
                if isinstance(idx, ast.Constant) and isinstance(idx.value, int) and -len(val.items) <= idx.value < len(val.items):
                    return val.items[idx.value]
                return None
            return val if isinstance(val, TENSOR_VALUES) else None
        if t is ast.UnaryOp:
            val = self.expr(node.operand)
            if isinstance(node.op, ast.USub):
                if isinstance(val, Const):
                    return Const(-val.value)
                if isinstance(val, LogOf):
                    return val
                return negated(val)
            return None
        if t is ast.Dict:
            vals = [self.expr(v) for v in node.values]
            for k in node.keys:
                self.expr(k)
            items = {k.value: v for k, v in zip(node.keys, vals) if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            return Record(items) if items else None
        if t in (ast.Tuple, ast.List):
            data = numeric_range(node)
            if data is not None:
                # Literal data (test fixtures, reference values): its bounds are known.
                return Guarded(data[0] > 0.0, data[1] < 1.0)
            return Tup([self.expr(e) for e in node.elts])
        if t is ast.Lambda:
            outer = self.scope
            self.scope = Scope(outer)
            for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs):
                self.scope.vars[a.arg] = None
            try:
                self.expr(node.body)
            finally:
                self.scope = outer
            return None
        if t in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            return self._comprehension(node)
        if t is ast.IfExp:
            self.expr(node.test)
            a, b = self.expr(node.body), self.expr(node.orelse)
            return merge([a, b])
        if t is ast.NamedExpr:
            val = self.expr(node.value)
            self._bind(node.target, val)
            return val
        if t is ast.Starred:
            return self.expr(node.value)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.expr(child)
            elif isinstance(child, (ast.keyword, ast.comprehension, ast.arguments)):
                for sub in ast.iter_child_nodes(child):
                    if isinstance(sub, ast.expr):
                        self.expr(sub)
        return None

    def _comprehension(self, node) -> None:
        outer = self.scope
        self.scope = Scope(outer)
        try:
            for gen in node.generators:
                it = self.expr(gen.iter)
                self._bind(gen.target, it if isinstance(it, Prob) else None)
                for cond in gen.ifs:
                    self.expr(cond)
            if isinstance(node, ast.DictComp):
                self.expr(node.key)
                self.expr(node.value)
            else:
                self.expr(node.elt)
        finally:
            self.scope = outer
        return None

    def _attribute(self, node: ast.Attribute):
        key = target_key(node)
        if key is not None:
            # Only `self.x` and plain names hold tracked values; anything else
            # is read through its base.
            scope_val = self.scope.lookup(key)
            if scope_val is not None:
                return scope_val
        base = self.expr(node.value)
        if isinstance(base, Qual):
            return Qual(N.canonical(f"{base.name}.{node.attr}"))
        if node.attr in _PASSTHROUGH_ATTRS and isinstance(base, TENSOR_VALUES):
            return base
        if isinstance(base, Instance):
            return base.cls.attrs.get(node.attr)
        return None

    def _binop(self, node, left: ast.AST, op: ast.operator, right: ast.AST):
        t = type(op)
        lval = self.expr(left)
        if t is ast.Div:  # a denominator is a guard position (an absorbed epsilon there matters)
            self.facts.guard_position += 1
            try:
                rval = self.expr(right)
            finally:
                self.facts.guard_position -= 1
        else:
            rval = self.expr(right)
        if t is ast.Mult:
            self._emit("mult", node, left, right, lval, rval)
            if isinstance(lval, Red) and isinstance(rval, Red) and lval.kind == rval.kind == N.NORM:
                return Red("normprod", node, guarded=lval.guarded or rval.guarded)
            if type(left) is type(right) and ast.dump(left) == ast.dump(right):
                self._emit("square", node, left, lval)  # `x * x`
                return square_of(node, lval)
            for a, b in ((lval, rval), (rval, lval)):
                if isinstance(a, Exp) and (b is None or isinstance(b, (Const, Prob))):
                    return a  # `pi * exp(...)`: a weighted exp is still an exp (a mixture term)
            return sign_of_product(lval, rval)
        if t is ast.Div:
            return self._divide(node, left, right, lval, rval)
        if t is ast.Pow:
            c = const_value(right)
            if c == 2.0:
                self._emit("square", node, left, lval)
                return square_of(node, lval)
            if c == 0.5:
                return self._on_sqrt(node, left, lval, None)
            return None
        if t not in (ast.Add, ast.Sub):
            return None
        lnum, rnum = number(left, lval), number(right, rval)
        if lnum is not None and rnum is not None:
            if self._f32 and self.facts.guard_position:
                self._absorbed(node, lnum, rnum, t is ast.Add)
            return Const(lnum + rnum if t is ast.Add else lnum - rnum)
        sign = sign_of_sum(lval, rval, subtract=t is ast.Sub)
        if sign is not None:
            return sign
        if t is ast.Sub:
            if lnum is not None and lnum >= 1.0:
                if isinstance(rval, (Prob, Guarded)):
                    comp = rval.complement()
                    return comp.guarded(lnum > 1.0, False) if isinstance(comp, Prob) else Guarded(comp.lo or lnum > 1.0, comp.hi)
                return None
            if isinstance(rval, Red) and rval.kind == N.MAX or named_max(right):
                # x - max(x), x - x_max; `x - x.max()` is the max of every element
                return Shifted(global_max=isinstance(rval, Red) and rval.kind == N.MAX and not rval.per_row)
            if isinstance(lval, Prob) or isinstance(rval, Prob):
                return Diff(lval, rval)
            if lnum is None and rnum is None:
                return Delta(centred=isinstance(rval, Red) and rval.kind == N.MEAN or named_mean(right))
            return None
        # `p + eps`: bounded away from 0. Unknown terms count as a guard:
        # stabcheck only flags what it can prove.
        for val, num in ((lval, rnum), (rval, lnum)):
            if isinstance(val, Exp) and num == 1.0:
                return OnePlusExp(val)
        for val, num in ((lval, rnum), (rval, lnum)):
            if isinstance(val, Prob):
                return val.guarded(num is None or num > 0, False)
            if isinstance(val, Red):
                return val.with_guard() if num is None or num > 0 else val
        return Guarded(True, False)

    def _absorbed(self, node, a: float, b: float, add: bool) -> None:
        """Report `1 - 1e-10`-style arithmetic whose epsilon float32 rounds away."""
        small, large = sorted((a, b), key=abs)
        if small == 0.0 or abs(small) >= 1e-4 or abs(large) < 0.1:
            return
        exact = a + b if add else a - b
        rounded = float32(exact)
        if rounded == float32(large if add or large is a else -large) and exact not in self._absorbed_seen:
            self._absorbed_seen.add(exact)
            self._emit("absorbed", node, exact, rounded)

    def _divide(self, node, num, den, num_val, den_val):
        self._emit("div", node, num, den, num_val, den_val)
        if isinstance(num_val, NonPos) and not (isinstance(den_val, Const) and den_val.value < 0):
            return num_val
        if isinstance(den_val, Red):
            if den_val.kind in (N.SUM,) and den_val.exp is not None and isinstance(num_val, Exp):
                return Prob(N.SRC_SOFTMAX, node, num_val.qual)  # a hand-written softmax
            if den_val.kind == "normprod":
                return Cosine(node)
        if isinstance(den_val, OnePlusExp) and const_value(num) == 1.0:
            return Prob(N.SRC_SIGMOID, node, den_val.exp.qual)  # a hand-written sigmoid
        return None

    def _on_sqrt(self, node, x_node, x_val, qual):
        self._emit("sqrt", node, x_node, x_val, qual)
        if isinstance(x_val, Red):
            if x_val.kind == N.VAR:  # sqrt(var(x)): a hand-written standard deviation
                return Red(N.STD, node, guarded=x_val.guarded)
            return Red("sqrt", node, pos=x_val.pos, guarded=x_val.guarded, sumsq=x_val.sumsq, dist=x_val.dist)
        return None

