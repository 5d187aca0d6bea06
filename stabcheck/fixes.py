"""Autofixes as plans: what to rewrite, located by position.

Detection stays on `ast` (fast); a check that sees a fixable shape records a
`Fix`: ops naming a rewrite recipe (fix_engine.RECIPES), the positions of the
nodes it rewrites and reads, and the spellings the module's imports allow
(`F.softplus` where the user imported `torch.nn.functional as F`). Only the
files that get fixed are parsed with libcst, where each op becomes a
transformation of the concrete tree (fix_engine.py), so parentheses,
comments and import placement are right by construction.
"""

from __future__ import annotations

import ast
from typing import NamedTuple

from stabcheck.source import SourceMap
from stabcheck.values import Qual

SAFE, UNSAFE = "safe", "unsafe"

# (row, col, end_row, end_col): 1-based rows, 0-based character columns, as
# libcst's PositionProvider counts them (parentheses excluded, as in `ast`).
Span = tuple[int, int, int, int]


# Named tuples: they pickle to worker processes and serialise to the JSON
# cache as plain lists (`Fix.load` turns them back).
class Op(NamedTuple):
    kind: str  # a recipe of fix_engine.RECIPES
    spans: tuple[Span, ...]  # the node it rewrites first, then nodes it reads
    params: tuple[str, ...] = ()


class Fix(NamedTuple):
    title: str
    applicability: str  # SAFE or UNSAFE
    ops: tuple[Op, ...]
    imports: tuple[str, ...] = ()  # qualified names to import (`scipy.special.log_softmax`)

    @classmethod
    def load(cls, data) -> "Fix":
        title, applicability, ops, imports = data
        return cls(title, applicability,
                   tuple(Op(k, tuple(tuple(s) for s in spans), tuple(p)) for k, spans, p in ops), tuple(imports))


class Edit(NamedTuple):
    """A change of the source text, as JSON output shows a fix."""

    start: int  # character offsets [start, end) in the source
    end: int
    content: str


class FixContext:
    def __init__(self, smap: SourceMap, tree: ast.Module, scope):
        self.smap = smap
        self.tree = tree
        self.scope = scope  # the walker's module scope: name -> value (set once the walker exists)
        self._parents: dict[int, ast.AST] | None = None
        self._names: set[str] | None = None

    def span(self, node: ast.AST) -> Span:
        row, col, end_row, end_col = self.smap.span(node)
        return row, col - 1, end_row, end_col - 1

    def op(self, kind: str, *nodes: ast.AST, params: tuple[str, ...] = ()) -> Op:
        return Op(kind, tuple(self.span(n) for n in nodes), params)

    def parent(self, node: ast.AST) -> ast.AST | None:
        """The node's parent (the map is built on first use: only fixes that
        look around a node pay for it)."""
        if self._parents is None:
            self._parents = {id(c): p for p in ast.walk(self.tree) for c in ast.iter_child_nodes(p)}
        return self._parents.get(id(node))

    def spell(self, qualname: str) -> tuple[str, tuple[str, ...]]:
        """How to write `qualname` here: through an existing import if one
        covers it (`F.softplus`), else a new `from module import name`.
        ("", ()) when the name is taken by something else."""
        bound = {v.name: k for k, v in self.scope.vars.items() if isinstance(v, Qual) and "." not in k}
        parts = qualname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in bound:
                return ".".join([bound[prefix], *parts[i:]]), ()
        if qualname in bound:
            return bound[qualname], ()
        name = parts[-1]
        if name in self.scope.vars or name in self._taken():
            return "", ()
        return name, (qualname,)

    def _taken(self) -> set[str]:
        """Every name the module binds or reads anywhere (a new import must
        not be shadowed by a local `softmax = ...`)."""
        if self._names is None:
            self._names = set()
            for node in ast.walk(self.tree):
                if isinstance(node, ast.Name):
                    self._names.add(node.id)
                elif isinstance(node, ast.arg):
                    self._names.add(node.arg)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    self._names.add(node.name)
                elif isinstance(node, ast.alias):
                    self._names.add((node.asname or node.name).partition(".")[0])
        return self._names
