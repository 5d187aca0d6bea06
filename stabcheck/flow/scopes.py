"""Scopes, functions and classes as the walk records them."""

from __future__ import annotations

from stabcheck.values import Prob, Raw, Red, Tup


class FuncInfo:
    __slots__ = ("node", "scope", "cls", "state", "ret", "defaults")

    def __init__(self, node, scope, cls=None):
        self.node = node
        self.scope = scope  # the defining scope (closure)
        self.cls = cls
        self.state = 0  # 0 new, 1 in progress, 2 done
        self.ret = None
        self.defaults: dict = {}  # parameters bound by their default (a loss object)


class ClassInfo:
    __slots__ = ("node", "scope", "attrs", "methods", "state", "init_bindings")

    def __init__(self, node, scope, init_bindings: dict | None = None):
        self.node = node
        self.scope = scope
        self.attrs: dict[str, object] = {}
        self.methods: dict[str, FuncInfo] = {}
        self.state = 0
        # `__init__`'s parameters bound by one construction (`Wrapper(nn.Sequential(..., nn.Softmax()))`).
        self.init_bindings: dict = init_bindings or {}


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


def merge(vals: list):
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
            return Tup([merge([v.items[i] for v in vals]) for i in range(len(first.items))])
        return None
    if isinstance(first, Raw) and all(isinstance(v, Raw) for v in vals):
        return first
    if isinstance(first, Red) and all(isinstance(v, Red) and v.kind == first.kind for v in vals):
        return Red(first.kind, first.node, all(v.pos for v in vals), all(v.guarded for v in vals))
    if all(v is first for v in vals):
        return first
    return None

