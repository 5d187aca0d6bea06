"""Provenance: which expressions hold probabilities, and where they flow.

One walk over a module's `ast`, in statement order. Each expression gets an
abstract value (see `values.py`); the walk tells the checks about the events
they subscribe to (a log, a loss call, a product, a square) together with the
values involved. Functions and classes of the module are analysed once, on
first call or at the end, so a call site sees what its callee returns.
"""

from __future__ import annotations

import ast
from typing import Callable, Iterable

from stabcheck import names as N
from stabcheck.project import resolve_relative
import struct

from stabcheck.values import (
    TENSOR_VALUES, Const, Cosine, Diff, Exp, Guarded, Layer, LogOf, LossObj, NonNeg, NonPos, OnePlusExp, Prob, Qual,
    Raw, Red, Shifted, Sq, Tup,
)

_NONNEG = (Sq, NonNeg)

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

_PASSTHROUGH_ATTRS = frozenset({"data", "T", "mT", "real", "values"})
# torch-only tensor methods: their constant arguments are float32 arithmetic.
_TORCH_METHODS = frozenset({"clamp", "clamp_", "clamp_min", "clamp_max", "clamp_min_", "clamp_max_"})
_HALF_METHODS = frozenset({"half"})


def float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def float16(x: float) -> float | None:
    try:
        return struct.unpack("e", struct.pack("e", x))[0]
    except OverflowError:
        return None


def strip(node: ast.AST) -> ast.AST:
    """Skip no-op wrappers that change nothing about the value."""
    while isinstance(node, ast.Starred):
        node = node.value
    return node


_FOLDED = "_stabcheck_const"  # const_value's result, kept on the node it folded
_FOLD_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)


def const_value(node: ast.AST | None) -> float | None:
    """Fold a numeric constant expression (`1 - 1e-7`, `-1`, `1e-3 * 2`).

    Iterative, and each node's value is kept on the node: the walker asks at
    every level of `a + b + ... + z`, which re-walked the chain (quadratic)
    and recursed as deep as it was long."""
    if node is None:
        return None
    stack = [node]
    while stack:
        top = stack[-1]
        if hasattr(top, _FOLDED):
            stack.pop()
            continue
        if isinstance(top, ast.UnaryOp) and isinstance(top.op, (ast.USub, ast.UAdd)):
            parts = [top.operand]
        elif isinstance(top, ast.BinOp) and isinstance(top.op, _FOLD_OPS):
            parts = [top.left, top.right]
        else:
            parts = []
        todo = [p for p in parts if not hasattr(p, _FOLDED)]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        setattr(top, _FOLDED, _fold(top))
    return getattr(node, _FOLDED)


def _fold(node: ast.AST) -> float | None:
    """One node's value, its operands already folded."""
    if isinstance(node, ast.Constant):
        v = node.value
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return None
        try:
            return float(v)
        except OverflowError:  # an integer literal past float range
            return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = getattr(node.operand, _FOLDED)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, _FOLD_OPS)):
        return None
    a, b = getattr(node.left, _FOLDED), getattr(node.right, _FOLDED)
    if a is None or b is None:
        return None
    try:
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div):
            return a / b
        v = a**b
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    return None if isinstance(v, complex) else v  # (-8) ** (1 / 3)


def base_key(node: ast.AST) -> str | None:
    """The variable an operand is about: `p`, `self.p`, `y[:, 1]` -> `y`,
    `1 - y` -> `y`, `-y` -> `y`, `y.float()` -> `y`."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            inner = base_key(node.value)
            return None if inner is None else f"{inner}.{node.attr}"
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            node = node.operand
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and const_value(node.left) == 1.0:
            node = node.right
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in N.PASSTHROUGH_METHODS
        ):
            node = node.func.value
        else:
            return None


def target_key(node: ast.AST) -> str | None:
    """Assignable names we track: `x`, `self.x`, `a.b.c`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = target_key(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


# ---------------------------------------------------------------- scopes
class FuncInfo:
    __slots__ = ("node", "scope", "cls", "state", "ret")

    def __init__(self, node, scope, cls=None):
        self.node = node
        self.scope = scope  # the defining scope (closure)
        self.cls = cls
        self.state = 0  # 0 new, 1 in progress, 2 done
        self.ret = None


class ClassInfo:
    __slots__ = ("node", "scope", "attrs", "methods", "state")

    def __init__(self, node, scope):
        self.node = node
        self.scope = scope
        self.attrs: dict[str, object] = {}
        self.methods: dict[str, FuncInfo] = {}
        self.state = 0


class Instance:
    __slots__ = ("cls",)

    def __init__(self, cls: ClassInfo):
        self.cls = cls


class Scope:
    __slots__ = ("vars", "parent", "cls", "self_name", "returns")

    def __init__(self, parent=None, cls=None, self_name=None):
        self.vars: dict[str, object] = {}
        self.parent = parent
        self.cls = cls
        self.self_name = self_name
        self.returns: list | None = None

    def lookup(self, key: str):
        scope = self
        while scope is not None:
            if scope.self_name and scope.cls is not None and key.startswith(scope.self_name + "."):
                return scope.cls.attrs.get(key[len(scope.self_name) + 1 :])
            if key in scope.vars:
                return scope.vars[key]
            scope = scope.parent
        return None

    def assign(self, key: str, val) -> None:
        if self.self_name and self.cls is not None and key.startswith(self.self_name + "."):
            self.cls.attrs[key[len(self.self_name) + 1 :]] = val
        else:
            self.vars[key] = val


def _merge(vals: list):
    """What a function returns when every return statement agrees; else unknown."""
    if not vals:
        return None
    first = vals[0]
    if isinstance(first, Prob):
        if all(isinstance(v, Prob) and v.src == first.src and v.comp == first.comp for v in vals):
            return Prob(
                first.src, first.node, first.qual, first.comp,
                all(v.lo for v in vals), all(v.hi for v in vals),
            )
        return None
    if isinstance(first, Tup):
        if all(isinstance(v, Tup) and len(v.items) == len(first.items) for v in vals):
            return Tup([_merge([v.items[i] for v in vals]) for i in range(len(first.items))])
        return None
    if isinstance(first, Raw) and all(isinstance(v, Raw) for v in vals):
        return first
    if isinstance(first, Red) and all(isinstance(v, Red) and v.kind == first.kind for v in vals):
        return Red(first.kind, first.node, all(v.pos for v in vals), all(v.guarded for v in vals))
    if all(v is first for v in vals):
        return first
    return None


def _activation_src(node: ast.AST | None, val) -> str | None:
    """`"softmax"`, `tf.nn.softmax`, `keras.activations.sigmoid` -> a SRC_*."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return N.ACTIVATION_STRINGS.get(node.value.lower())
    if isinstance(val, Qual):
        func = N.FUNCS.get(val.name)
        if func is not None and func.op == N.SOFTMAX:
            return N.SRC_SOFTMAX
        if func is not None and func.op == N.SIGMOID:
            return N.SRC_SIGMOID
    return None


def _arg(call: ast.Call, pos: int, kws: Iterable[str]) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg in kws:
            return kw.value
    if 0 <= pos < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    return None


def _kw_true(call: ast.Call, name: str) -> bool:
    for kw in call.keywords:
        if kw.arg == name:
            return isinstance(kw.value, ast.Constant) and kw.value.value is True
    return False


# ---------------------------------------------------------------- the walk
class Walker:
    """Analyses one module; `listeners` maps an event name to callbacks."""

    def __init__(self, listeners: dict[str, list[Callable]], resolver=None, package: str | None = None):
        self.listeners = {ev: tuple(cbs) for ev, cbs in listeners.items() if cbs}
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

    def _emit(self, event: str, *args) -> None:
        for cb in self.listeners.get(event, ()):
            cb(*args)

    # ------------------------------------------------------------ entry
    def run(self, tree: ast.Module) -> None:
        self._predeclare(tree.body, self.scope)
        self.block(tree.body)
        self._drain()

    def _drain(self) -> None:
        # Functions and classes nobody called are still checked, once.
        while self._pending:
            item = self._pending.pop(0)
            if isinstance(item, ClassInfo):
                self._analyse_class(item)
            else:
                self._summary(item)

    def _predeclare(self, body: list[ast.stmt], scope: Scope) -> None:
        """Bind imports and top-level defs before walking, so a function may
        call one defined below it and imports in try/except or if blocks count."""
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self._import(stmt, scope)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._define_function(stmt, scope)
                self._declared.add(id(stmt))
            elif isinstance(stmt, ast.ClassDef):
                self._define_class(stmt, scope)
                self._declared.add(id(stmt))
            elif isinstance(stmt, ast.Try):
                for part in (stmt.body, *[h.body for h in stmt.handlers], stmt.orelse, stmt.finalbody):
                    self._predeclare_imports(part, scope)
            elif isinstance(stmt, ast.If):
                self._predeclare_imports(stmt.body, scope)
                self._predeclare_imports(stmt.orelse, scope)

    def _predeclare_imports(self, body, scope) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self._import(stmt, scope)

    # ------------------------------------------------------------ statements
    def block(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.stmt(stmt)

    def stmt(self, s: ast.stmt) -> None:
        t = type(s)
        if t is ast.Expr:
            self.expr(s.value)
        elif t is ast.Assign:
            val = self.expr(s.value)
            for target in s.targets:
                self._bind(target, val)
                if self._half_call is s.value and isinstance(target, (ast.Name, ast.Attribute)):
                    self._half_keys.add(target_key(target))
        elif t is ast.AugAssign:
            val = self._binop(s, s.target, s.op, s.value)
            self._bind(s.target, val)
        elif t is ast.AnnAssign:
            if s.value is not None:
                self._bind(s.target, self.expr(s.value))
        elif t is ast.Return:
            val = self.expr(s.value) if s.value is not None else None
            if self.scope.returns is not None:
                self.scope.returns.append(val)
        elif t in (ast.If, ast.While):
            self.expr(s.test)
            self.block(s.body)
            self.block(s.orelse)
        elif t in (ast.For, ast.AsyncFor):
            it = self.expr(s.iter)
            self._bind(s.target, it if isinstance(it, Prob) else None)
            self.block(s.body)
            self.block(s.orelse)
        elif t in (ast.With, ast.AsyncWith):
            for item in s.items:
                self.expr(item.context_expr)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, None)
            self.block(s.body)
        elif t in (ast.Try, getattr(ast, "TryStar", ast.Try)):
            self.block(s.body)
            for h in s.handlers:
                if h.type is not None:
                    self.expr(h.type)
                if h.name:
                    self.scope.assign(h.name, None)
                self.block(h.body)
            self.block(s.orelse)
            self.block(s.finalbody)
        elif t in (ast.FunctionDef, ast.AsyncFunctionDef):
            for d in s.decorator_list:
                self.expr(d)
            if id(s) not in self._declared:
                self._define_function(s, self.scope)
        elif t is ast.ClassDef:
            for d in s.decorator_list:
                self.expr(d)
            for b in s.bases:
                self.expr(b)
            if id(s) not in self._declared:
                self._define_class(s, self.scope)
        elif t in (ast.Import, ast.ImportFrom):
            self._import(s, self.scope)
        elif t is ast.Delete:
            for target in s.targets:
                self._bind(target, None)
        elif t is ast.Match:
            self.expr(s.subject)
            for case in s.cases:
                if case.guard is not None:
                    self.expr(case.guard)
                self.block(case.body)
        elif t in (ast.Raise, ast.Assert):
            for child in ast.iter_child_nodes(s):
                self.expr(child)
        # Pass, Break, Continue, Global, Nonlocal: nothing flows.

    def _bind(self, target: ast.AST, val) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            items = val.items if isinstance(val, Tup) and len(val.items) == len(target.elts) else None
            for i, elt in enumerate(target.elts):
                self._bind(elt, items[i] if items else None)
            return
        if isinstance(target, ast.Starred):
            self._bind(target.value, None)
            return
        key = target_key(target)
        if key is not None:
            self.scope.assign(key, val)
        elif isinstance(target, ast.Subscript):
            self.expr(target.value)
            self.expr(target.slice)

    def _import(self, s, scope: Scope) -> None:
        if isinstance(s, ast.Import):
            for alias in s.names:
                if alias.asname:
                    scope.assign(alias.asname, Qual(N.canonical(alias.name)))
                else:
                    top = alias.name.split(".", 1)[0]
                    scope.assign(top, Qual(top))
        else:
            module = resolve_relative(s.level, s.module, self._package)
            if not module:
                return
            for alias in s.names:
                if alias.name != "*":
                    scope.assign(alias.asname or alias.name, Qual(N.canonical(f"{module}.{alias.name}")))

    def _define_function(self, node, scope: Scope, cls: ClassInfo | None = None) -> FuncInfo:
        info = FuncInfo(node, scope, cls)
        if cls is None:
            scope.assign(node.name, info)
        self._pending.append(info)
        return info

    def _define_class(self, node: ast.ClassDef, scope: Scope) -> ClassInfo:
        info = ClassInfo(node, scope)
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                info.methods[stmt.name] = FuncInfo(stmt, scope, info)
        scope.assign(node.name, info)
        self._pending.append(info)
        return info

    # ------------------------------------------------------------ functions and classes
    def _summary(self, info: FuncInfo):
        """Analyse a function once; return what it returns."""
        if info.state == 2:
            return info.ret
        if info.state == 1:
            return None  # recursion
        if info.cls is not None and info.cls.state == 0:
            self._analyse_class(info.cls)
            return info.ret
        info.state = 1
        for default in (*info.node.args.defaults, *[d for d in info.node.args.kw_defaults if d is not None]):
            self.expr(default)
        info.ret = self._walk_function(info, {})
        info.state = 2
        return info.ret

    def _walk_function(self, info: FuncInfo, bindings: dict):
        """Walk a function body with its parameters unknown, except `bindings`."""
        node = info.node
        self_name = None
        if info.cls is not None and node.args.args and not any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list
        ):
            self_name = node.args.args[0].arg
        outer = self.scope
        scope = Scope(info.scope, info.cls, self_name)
        scope.returns = []
        args = node.args
        for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if a is not None:
                scope.vars[a.arg] = None  # parameters shadow outer names: unknown
        scope.vars.update(bindings)
        if self_name:
            scope.vars[self_name] = Instance(info.cls)
        self.scope = scope
        try:
            self._predeclare_local(node.body, scope)
            self.block(node.body)
        finally:
            self.scope = outer
        return _merge(scope.returns)

    def _call_function(self, info: FuncInfo, node: ast.Call, vals: dict):
        """What calling `info` returns here. A function given an activation as
        an argument (`add_layer(h, 10, 1, activation_function=tf.nn.softmax)`)
        is walked again with it bound, once per distinct activation."""
        bindings = {}
        if info.cls is None:
            params = [a.arg for a in (*info.node.args.posonlyargs, *info.node.args.args)]
            pairs = list(zip(params, node.args)) + [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
            for param, arg in pairs:
                val = vals.get(id(arg))
                if isinstance(val, Qual) and N.FUNCS.get(val.name) is not None and N.FUNCS[val.name].op in (N.SOFTMAX, N.SIGMOID):
                    bindings[param] = val
                elif isinstance(val, Layer) and val.activation:
                    bindings[param] = val
        if not bindings:
            return self._summary(info)
        key = (id(info), tuple(sorted((p, getattr(v, "name", id(v))) for p, v in bindings.items())))
        if key not in self._contexts:
            self._summary(info)  # the plain walk first: its findings, its recursion guard
            self._contexts[key] = None  # recursion guard for the contextual walk
            self._contexts[key] = self._walk_function(info, bindings)
        return self._contexts[key]

    # ------------------------------------------------------------ other modules
    def _export(self, name: str):
        """The summary of `module.attr` from another module of the project."""
        if self._resolver is None:
            return None
        module, _, attr = name.rpartition(".")
        exports = self._resolver(module) if module else None
        return exports.get(attr) if exports else None

    def exports(self) -> dict:
        """What this module offers other modules (after `run`)."""
        from stabcheck.project import export_descriptor

        out = {}
        for name, val in self.scope.vars.items():
            if isinstance(val, (ClassInfo, Instance)):
                ret = self._call_instance(val if isinstance(val, Instance) else Instance(val))
                if isinstance(ret, Prob) and not ret.comp:
                    out[name] = ("class" if isinstance(val, ClassInfo) else "func", ret.src)
                continue
            desc = export_descriptor(val)
            if desc is not None:
                out[name] = desc
        return out

    def _predeclare_local(self, body, scope) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                self._import(stmt, scope)

    def _analyse_class(self, cls: ClassInfo) -> None:
        if cls.state:
            return
        cls.state = 1
        outer = self.scope
        self.scope = Scope(cls.scope)
        try:
            for stmt in cls.node.body:
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.stmt(stmt)
        finally:
            self.scope = outer
        # Constructors first: `self.softmax = nn.Softmax(1)` in __init__ is
        # what `forward` calls.
        order = sorted(
            cls.methods.values(),
            key=lambda f: (f.node.name not in ("__init__", "build", "setup"), f.node.lineno),
        )
        for method in order:
            for d in method.node.decorator_list:
                self.expr(d)
            self._summary(method)
        cls.state = 2

    def _call_instance(self, inst: Instance, method: str = "__call__"):
        cls = inst.cls
        self._analyse_class(cls)
        if method == "__call__":
            for name in ("forward", "call", "__call__"):
                if name in cls.methods:
                    return self._summary(cls.methods[name])
            return None
        info = cls.methods.get(method)
        return self._summary(info) if info is not None else None

    def _function_scope(self) -> Scope:
        """The innermost function (or module) scope, past comprehensions and lambdas."""
        scope = self.scope
        while scope.returns is None and scope.parent is not None:
            scope = scope.parent
        return scope

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
                if isinstance(val, _NONNEG):
                    return NonPos()
            return None
        if t in (ast.Tuple, ast.List):
            data = _numeric_range(node)
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
            return _merge([a, b])
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
        lval, rval = self.expr(left), self.expr(right)
        t = type(op)
        if t is ast.Mult:
            self._emit("mult", node, left, right, lval, rval)
            if isinstance(lval, Red) and isinstance(rval, Red) and lval.kind == rval.kind == N.NORM:
                return Red("normprod", node, guarded=lval.guarded or rval.guarded)
            return _sign_of_product(lval, rval)
        if t is ast.Div:
            return self._divide(node, left, right, lval, rval)
        if t is ast.Pow:
            c = const_value(right)
            if c == 2.0:
                self._emit("square", node, left, lval)
                return Sq(node)
            if c == 0.5:
                return self._on_sqrt(node, left, lval, None)
            return None
        if t not in (ast.Add, ast.Sub):
            return None
        lnum, rnum = _number(left, lval), _number(right, rval)
        if lnum is not None and rnum is not None:
            if self._f32:
                self._absorbed(node, lnum, rnum, t is ast.Add)
            return Const(lnum + rnum if t is ast.Add else lnum - rnum)
        if t is ast.Sub:
            if lnum is not None and lnum >= 1.0:
                if isinstance(rval, (Prob, Guarded)):
                    comp = rval.complement()
                    return comp.guarded(lnum > 1.0, False) if isinstance(comp, Prob) else Guarded(comp.lo or lnum > 1.0, comp.hi)
                return None
            if isinstance(rval, Red) and rval.kind == N.MAX or _named_max(right):
                return Shifted()  # x - max(x), x - x_max
            if isinstance(lval, Prob) or isinstance(rval, Prob):
                return Diff(lval, rval)
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
        if rounded == float32(large if add or large is a else -large):
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
            return Red("sqrt", node, pos=x_val.pos, guarded=x_val.guarded, sumsq=x_val.sumsq)
        return None

    # ------------------------------------------------------------ calls
    def _args(self, node: ast.Call, f32: bool = False) -> dict[int, object]:
        """Evaluate every argument once; values by id of the argument node.
        `f32`: the callee computes in float32 (constant arithmetic there is
        checked for absorbed epsilons)."""
        vals = {}
        self._f32 += f32
        try:
            for a in node.args:
                vals[id(a)] = self.expr(a)
            for kw in node.keywords:
                vals[id(kw.value)] = self.expr(kw.value)
        finally:
            self._f32 -= f32
        return vals

    def _call(self, node: ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute):
            recv = self.expr(func.value)
            if isinstance(recv, Qual):
                callee = Qual(N.canonical(f"{recv.name}.{func.attr}"))
            elif isinstance(recv, Instance) and func.attr in recv.cls.attrs:
                callee = recv.cls.attrs[func.attr]  # `self.main(x)`, `self.criterion(out, y)`
            else:
                return self._method(node, func, recv, self._args(node, func.attr in _TORCH_METHODS))
        else:
            callee = self.expr(func)
        f32 = isinstance(callee, Qual) and callee.name.split(".", 1)[0] in N.AUTODIFF_ROOTS
        vals = self._args(node, f32)
        if isinstance(callee, Qual):
            return self._qualified(node, callee.name, vals)
        if isinstance(callee, FuncInfo):
            return self._call_function(callee, node, vals)
        if isinstance(callee, ClassInfo):
            return Instance(callee)
        if isinstance(callee, Instance):
            return self._call_instance(callee)
        if isinstance(callee, Layer):
            ret = callee.ret
            if callee.activation and isinstance(ret, Prob):
                return Prob(ret.src, node, ret.qual)
            if isinstance(ret, Raw):
                return Raw(node)
            if isinstance(ret, Cosine):
                return Cosine(node)
            return ret
        if isinstance(callee, LossObj):
            self._emit_loss(node, callee.spec, callee.family, callee.qual, vals)
        return None

    def _qualified(self, node: ast.Call, name: str, vals: dict):
        func = N.FUNCS.get(name)
        if func is not None:
            x = _arg(node, 0, _OPERAND_KEYWORDS)
            return self._apply(node, func, name, x, vals.get(id(x)), vals)
        spec = N.LOSS_FUNCS.get(name)
        if spec is not None:
            self._emit_loss(node, spec, _family(spec, node), name, vals)
            return None
        spec = N.LOSS_CLASSES.get(name)
        if spec is not None:
            return LossObj(spec, _family(spec, node), name)
        src = N.ACTIVATION_MODULES.get(name)
        if src is not None:
            return Layer(Prob(src, node, name), activation=True)
        if name in N.LINEAR_MODULES:
            return Layer(Raw(node))
        if name in N.COSINE_MODULES:
            return Layer(Cosine(node))
        if name in N.ADAM_FAMILY:
            self._adam(node, vals)
            return None
        if name in N.SEQUENTIAL:
            if name == "torch.nn.Sequential":
                last = vals.get(id(node.args[-1])) if node.args else None
            else:
                layers = vals.get(id(_arg(node, 0, ("layers",))))
                last = layers.items[-1] if isinstance(layers, Tup) and layers.items else None
            return Layer(last.ret if isinstance(last, Layer) else None, sequential=name)
        if name in N.FUNCTIONAL_MODELS:
            return Layer(vals.get(id(_arg(node, 1, ("outputs",)))))
        export = self._export(name)
        if export is not None:
            kind, src = export
            prob = Prob(src, node, name)
            return Layer(prob) if kind == "class" else prob
        if name.startswith(N.KERAS_LAYER_PREFIX):
            if name == N.KERAS_ACTIVATION_LAYER:
                act = _arg(node, 0, ("activation",))
            elif name == N.KERAS_DENSE:
                act = _arg(node, 1, ("activation",))
            else:
                act = _arg(node, -1, ("activation",))
            src = _activation_src(act, vals.get(id(act)))
            if src:
                return Layer(Prob(src, node, name), activation=name == N.KERAS_ACTIVATION_LAYER)
            if name in N.KERAS_LINEAR_LAYERS and _is_linear_activation(act):
                return Layer(Raw(node))
            return Layer(None)
        return None

    def _method(self, node: ast.Call, func: ast.Attribute, recv, vals: dict):
        name = func.attr
        if name in _HALF_METHODS or (name == "to" and self._to_half(node, vals)):
            key = base_key(func.value)
            if key is not None:
                self._half_keys.add(key)
            self._half_call = node  # `model = Net().half()`: the target is the model
        if name == "compile" and isinstance(recv, (Layer, Instance)):
            loss = _arg(node, 1, ("loss",))
            if loss is not None:
                out = recv.ret if isinstance(recv, Layer) else self._call_instance(recv)
                self._emit("compile", node, loss, vals.get(id(loss)), out)
            return None
        if name in N.MODULE_SELF_METHODS and isinstance(recv, (Instance, Layer, LossObj)):
            return recv  # `Net().to(device)`, `model.eval()`
        if isinstance(recv, Instance):
            if name in N.PROBA_METHODS:
                return Prob(N.SRC_PROBA, node)
            if name in N.PREDICT_METHODS:
                return self._call_instance(recv)
            info = recv.cls.methods.get(name)
            return self._summary(info) if info is not None else None
        if isinstance(recv, Layer):
            if name == "add" and recv.sequential and node.args:
                added = vals.get(id(node.args[0]))
                key = target_key(func.value)
                if key is not None:
                    self.scope.assign(key, Layer(added.ret if isinstance(added, Layer) else None, recv.sequential))
                return None
            if name in N.PREDICT_METHODS:
                return recv.ret
            return Prob(N.SRC_PROBA, node) if name in N.PROBA_METHODS else None
        if isinstance(recv, LossObj):
            if name in ("forward", "call", "__call__"):
                self._emit_loss(node, recv.spec, recv.family, recv.qual, vals)
            return None
        if isinstance(recv, (FuncInfo, ClassInfo)):
            return None
        if name in N.PROBA_METHODS:
            return Prob(N.SRC_PROBA, node)
        nargs = len(node.args) + len(node.keywords)
        inplace = N.INPLACE_METHODS.get(name)
        spec = N.METHODS.get(inplace or name)
        if spec is not None and nargs in spec[1]:
            val = self._apply(node, spec[0], None, func.value, recv, vals)
            if inplace:
                key = target_key(func.value)
                if key is not None:
                    self.scope.assign(key, val)
            return val
        if len(node.args) == 1 and not node.keywords:
            arg = node.args[0]
            if name == "pow" and const_value(arg) == 2.0:
                self._emit("square", node, func.value, recv)
                return Sq(node)
            if name == "pow" and const_value(arg) == 0.5:
                return self._on_sqrt(node, func.value, recv, None)
            if name == "mul":
                self._emit("mult", node, func.value, arg, recv, vals.get(id(arg)))
                return None
            if name == "div":
                return self._divide(node, func.value, arg, recv, vals.get(id(arg)))
            if name == "add" and isinstance(recv, Exp) and const_value(arg) == 1.0:
                return OnePlusExp(recv)
        if name in N.PASSTHROUGH_METHODS:
            return recv if isinstance(recv, TENSOR_VALUES) else None
        return None

    def _apply(self, node: ast.Call, func: N.Func, qual, x_node, x_val, vals: dict):
        """Apply a table operation to its operand `x`: the first argument of a
        function, the receiver of a method."""
        op = func.op
        if op == N.SOFTMAX:
            return Prob(N.SRC_SOFTMAX, node, qual)
        if op == N.SIGMOID:
            return Prob(N.SRC_SIGMOID, node, qual)
        if op == N.LOG:
            return self._on_log(node, x_node, x_val)
        if op == N.PASSTHROUGH:
            return x_val if isinstance(x_val, TENSOR_VALUES) else None
        if op == "reduce":
            return _reduce(func.kind, node, x_val)
        if op == N.EXP:
            return Exp(node, isinstance(x_val, (Shifted, NonPos)), qual)
        if op == N.ABS:
            return NonNeg()
        if op == N.SQRT:
            return self._on_sqrt(node, x_node, x_val, qual) if x_node is not None else None
        if op == N.LOG1P:
            if x_node is not None:
                self._emit("log1p", node, x_node, x_val)
            return None
        if op == N.ACOS:
            if x_node is not None:
                self._emit("acos", node, x_node, x_val)
            return None
        if op == N.COSINE:
            return Cosine(node)
        if op == N.SQUARE:
            if x_node is not None:
                self._emit("square", node, x_node, x_val)
            return Sq(node)
        if op == N.WHERE:
            return Guarded(True, True)
        if op in (N.MULTIPLY, N.DIVIDE):
            if len(node.args) == 2:
                a, b = node.args
                if op == N.DIVIDE:
                    return self._divide(node, a, b, vals.get(id(a)), vals.get(id(b)))
                self._emit("mult", node, a, b, vals.get(id(a)), vals.get(id(b)))
            return None
        if op == N.CLAMP:
            if isinstance(x_val, Cosine):
                return Cosine(x_val.node, guarded=_clamps_inside_unit(func, node, qual))
            lo = func.lo is not None and _useful_bound(_arg(node, *func.lo), low=True)
            hi = func.hi is not None and _useful_bound(_arg(node, *func.hi), low=False)
            return _guard(x_val, lo, hi)
        if op in (N.MAXIMUM, N.MINIMUM):
            if len(node.args) != 2:
                return None
            a, b = node.args
            x_val, bound = vals.get(id(a)), b
            if not isinstance(x_val, (Prob, Guarded)) and isinstance(vals.get(id(b)), (Prob, Guarded)):
                x_val, bound = vals.get(id(b)), a
            if op == N.MAXIMUM:
                return _guard(x_val, _useful_bound(bound, low=True), False)
            return _guard(x_val, False, _useful_bound(bound, low=False))
        return None

    def _on_log(self, node, x_node, x_val):
        if x_node is None:
            return None
        self._emit("log", node, x_node, x_val)
        if x_val is not None:
            return None
        # Unknown origin: remember it, in case it turns out to be `y * log(p)`.
        inner, comp = x_node, False
        if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub) and const_value(inner.left) == 1.0:
            inner, comp = inner.right, True
        if isinstance(inner, (ast.Name, ast.Attribute, ast.Subscript)):
            key = base_key(inner)
            if key is not None:
                return LogOf(node, key, comp, id(self._function_scope()))
        return None

    def _emit_loss(self, node: ast.Call, spec: N.LossSpec, family: str, qual: str, vals: dict) -> None:
        pairs = []
        for pos, kws in spec.pred:
            arg = _arg(node, pos, kws)
            if arg is not None:
                pairs.append((arg, vals.get(id(arg))))
        self._emit("loss", node, spec, family, qual, pairs)

    def _to_half(self, node: ast.Call, vals: dict) -> bool:
        """`.to(torch.float16)`, `.to(device, dtype=torch.half)`."""
        for v in vals.values():
            if isinstance(v, Qual) and v.name in N.HALF_DTYPES:
                return True
        return False

    def _adam(self, node: ast.Call, vals: dict) -> None:
        params = _arg(node, 0, ("params",))
        if not (isinstance(params, ast.Call) and isinstance(params.func, ast.Attribute)):
            return
        if params.func.attr != "parameters" or base_key(params.func.value) not in self._half_keys:
            return
        eps_node = _arg(node, 3, ("eps",))
        eps = N.ADAM_DEFAULT_EPS if eps_node is None else _number(eps_node, vals.get(id(eps_node)))
        if eps is not None and float16(eps) == 0.0:
            self._emit("half_optimizer", node, eps)


_OPERAND_KEYWORDS = ("input", "x", "a", "t", "tensor", "logits", "features")


def _family(spec: N.LossSpec, node: ast.Call) -> str:
    if spec.from_logits_family and _kw_true(node, "from_logits"):
        return spec.from_logits_family
    return spec.family


def _numeric_range(node) -> tuple[float, float] | None:
    """(min, max) of a non-empty, possibly nested list of number literals."""
    first = node.elts[0] if node.elts else None
    if not isinstance(first, (ast.Constant, ast.UnaryOp, ast.List, ast.Tuple)):
        return None
    lo, hi = float("inf"), float("-inf")
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.List, ast.Tuple)):
            if not item.elts:
                return None
            stack.extend(item.elts)
            continue
        v = const_value(item)
        if v is None:
            return None
        lo, hi = min(lo, v), max(hi, v)
    return lo, hi


def _useful_bound(node: ast.AST | None, low: bool) -> bool:
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


def _guard(val, lo: bool, hi: bool):
    if isinstance(val, Prob):
        return val.guarded(lo, hi)
    if isinstance(val, Red):
        return val.with_guard() if lo else val
    if isinstance(val, Guarded):
        return Guarded(val.lo or lo, val.hi or hi)
    return Guarded(lo, hi)


def _number(node: ast.AST, val) -> float | None:
    c = const_value(node)
    if c is None and isinstance(val, Const):
        return val.value
    return c


def _is_linear_activation(act: ast.AST | None) -> bool:
    return act is None or (isinstance(act, ast.Constant) and act.value in (None, "linear"))


def _reduce(kind: str, node, x_val):
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


def _sign_of_product(a, b):
    """`-0.5 * x ** 2` is at most 0. A product of a non-positive factor with
    an unknown one counts as non-positive: stabcheck flags what it can
    prove, and an explicit negation shows the intent."""
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const):
            if x.value < 0 and isinstance(y, _NONNEG) or x.value > 0 and isinstance(y, NonPos):
                return NonPos()
        elif isinstance(x, NonPos) and (y is None or isinstance(y, _NONNEG)):
            return NonPos()
    return None


def _clamps_inside_unit(func: N.Func, node: ast.Call, qual: str | None) -> bool:
    """Does a clamp keep a cosine where acos is differentiable? With autodiff
    the bounds must be strictly inside (-1, 1); NumPy only needs [-1, 1]."""
    lo = _arg(node, *func.lo) if func.lo else None
    hi = _arg(node, *func.hi) if func.hi else None
    if lo is None or hi is None:
        return False
    strict = qual is None or N.framework_of(qual) in N.AUTODIFF_ROOTS
    for bound, inside in ((const_value(lo), lambda v: v > -1.0), (const_value(hi), lambda v: v < 1.0)):
        if bound is not None and (inside(bound) if strict else abs(bound) <= 1.0) is False:
            return False
    return True


def _named_max(node: ast.AST) -> bool:
    """`x - x_max`, `logits - max_logit`: a name that says it holds a maximum
    (computed where the walk cannot see, e.g. a helper in another library)."""
    key = base_key(node)
    return key is not None and "max" in key.rsplit(".", 1)[-1].lower()
