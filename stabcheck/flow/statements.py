"""Statement walking: blocks, bindings, imports, and functions and classes
analysed once (on first call or at the end of the module)."""

from __future__ import annotations

import ast

from stabcheck import names as N
from stabcheck.flow.scopes import ClassInfo, FuncInfo, Instance, Scope, merge
from stabcheck.flow.facts import ends_block
from stabcheck.flow.syntax import const_value, target_key
from stabcheck.project import resolve_relative
from stabcheck.values import Layer, LossObj, Prob, Qual, Tup


class StatementWalker:
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
        facts = self.facts
        mark = None
        for stmt in body:
            self.stmt(stmt)
            # `if d == 0: return` and `assert d > 0` guard the rest of the block.
            if type(stmt) is ast.If and not stmt.orelse and ends_block(stmt.body):
                m = facts.push(stmt.test, negated=True)
            elif type(stmt) is ast.Assert:
                m = facts.push(stmt.test)
            else:
                continue
            if mark is None:
                mark = m
        if mark is not None:
            facts.pop(mark)

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
            mark = self.facts.push(s.test)
            self.block(s.body)
            self.facts.pop(mark)
            mark = self.facts.push(s.test, negated=True)
            self.block(s.orelse)
            self.facts.pop(mark)
        elif t in (ast.For, ast.AsyncFor):
            it = self.expr(s.iter)
            self._bind(s.target, it if isinstance(it, Prob) else None)
            self.block(s.body)
            self.block(s.orelse)
        elif t in (ast.With, ast.AsyncWith):
            cut = False
            for item in s.items:
                self.expr(item.context_expr)
                cut = cut or self._stops_gradient(item.context_expr)
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, None)
            self.facts.no_grad += cut
            try:
                self.block(s.body)
            finally:
                self.facts.no_grad -= cut
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
                self.facts.note_import(alias.name)
                if alias.asname:
                    scope.assign(alias.asname, Qual(N.canonical(alias.name)))
                else:
                    top = alias.name.split(".", 1)[0]
                    scope.assign(top, Qual(top))
        else:
            module = resolve_relative(s.level, s.module, self._package)
            if not module:
                return
            self.facts.note_import(module)
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
        info = self._class_info(node, scope)
        scope.assign(node.name, info)
        self._pending.append(info)
        return info

    def _class_info(self, node: ast.ClassDef, scope: Scope, init_bindings: dict | None = None) -> ClassInfo:
        info = ClassInfo(node, scope, init_bindings)
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                info.methods[stmt.name] = FuncInfo(stmt, scope, info)
        return info

    def _construct(self, cls: ClassInfo, node: ast.Call, vals: dict) -> Instance:
        """`Trainer(SoftmaxNet(), nn.CrossEntropyLoss())`: a construction given
        a loss or a probability model is analysed as its own class, with
        `__init__`'s parameters bound, once per distinct binding."""
        init = cls.methods.get("__init__")
        if init is None or cls.init_bindings:
            return Instance(cls)
        params = [a.arg for a in (*init.node.args.posonlyargs, *init.node.args.args)][1:]
        pairs = list(zip(params, node.args)) + [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
        bindings = {p: vals.get(id(a)) for p, a in pairs if self._carries(vals.get(id(a)))}
        if not bindings:
            return Instance(cls)
        key = (id(cls), tuple(sorted((p, _identity(v)) for p, v in bindings.items())))
        if key not in self._contexts:
            self._contexts[key] = self._class_info(cls.node, cls.scope, bindings)
        return Instance(self._contexts[key])

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
        info.defaults = self._defaults(info)
        extra = info.cls.init_bindings if info.cls is not None and info.node.name == "__init__" else {}
        info.ret = self._walk_function(info, {**info.defaults, **extra})
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
        saved = self.facts.enter_function(no_grad=any(self._stops_gradient(d) for d in node.decorator_list))
        try:
            self._predeclare_local(node.body, scope)
            self.block(node.body)
        finally:
            self.scope = outer
            self.facts.leave_function(saved)
        return merge(scope.returns)

    def _stops_gradient(self, node: ast.AST) -> bool:
        """`torch.no_grad()`, `torch.no_grad` (a decorator), `torch.inference_mode()`,
        `torch.set_grad_enabled(False)`."""
        call = node if isinstance(node, ast.Call) else None
        qual = self.expr(call.func if call is not None else node)
        if not isinstance(qual, Qual):
            return False
        if qual.name in N.NO_GRAD_CONTEXTS:
            return call is None or not call.args or const_value(call.args[0]) != 0.0
        if qual.name in N.GRAD_SWITCH and call is not None and call.args:
            first = call.args[0]
            return isinstance(first, ast.Constant) and first.value is False
        return False

    def _defaults(self, info: FuncInfo) -> dict:
        """Evaluate a function's default values (once, at its first walk); a
        loss object given as a default (`criterion=nn.CrossEntropyLoss()`) is
        what the parameter holds unless a caller passes another."""
        args = info.node.args
        positional = (*args.posonlyargs, *args.args)
        pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
        pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
        bound = {}
        for param, default in pairs:
            val = self.expr(default)
            if isinstance(val, LossObj):
                bound[param.arg] = val
        return bound

    def _call_function(self, info: FuncInfo, node: ast.Call, vals: dict):
        """What calling `info` returns here. A function given an activation,
        a loss object or a model that returns a probability as an argument
        (`add_layer(h, 10, 1, activation_function=tf.nn.softmax)`,
        `train(Net(), nn.CrossEntropyLoss(), x, y)`) is walked again with it
        bound, once per distinct binding."""
        bindings = {}
        if info.cls is None:
            params = [a.arg for a in (*info.node.args.posonlyargs, *info.node.args.args)]
            pairs = list(zip(params, node.args)) + [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
            for param, arg in pairs:
                val = vals.get(id(arg))
                if self._carries(val):
                    bindings[param] = val
        if not bindings:
            return self._summary(info)
        key = (id(info), tuple(sorted((p, _identity(v)) for p, v in bindings.items())))
        if key not in self._contexts:
            self._summary(info)  # the plain walk first: its findings, its recursion guard
            self._contexts[key] = None  # recursion guard for the contextual walk
            self._contexts[key] = self._walk_function(info, {**info.defaults, **bindings})
        return self._contexts[key]

    def _carries(self, val) -> bool:
        """Is `val` worth walking a callee again for?"""
        if isinstance(val, Qual):
            func = N.FUNCS.get(val.name)
            return func is not None and func.op in (N.SOFTMAX, N.SIGMOID)
        if isinstance(val, Layer):
            return val.activation or isinstance(val.ret, Prob)
        if isinstance(val, LossObj):
            return True
        if isinstance(val, Instance):
            return isinstance(self._call_instance(val), Prob)
        return False

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
        self.scope = body = Scope(cls.scope)
        try:
            for stmt in cls.node.body:
                if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.stmt(stmt)
        finally:
            self.scope = outer
        # Class attributes (`loss_fn = nn.BCELoss()` in the class body) are
        # what `self.loss_fn` reads until a method assigns it.
        for name, val in body.vars.items():
            if val is not None and name not in cls.methods:
                cls.attrs.setdefault(name, val)
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



def _identity(val):
    """What distinguishes one binding from another for the contextual-walk cache."""
    if isinstance(val, Qual):
        return val.name
    if isinstance(val, LossObj):
        return val.qual
    if isinstance(val, Instance):
        return id(val.cls)
    return id(val)
