"""Autofixes: range edits on the source text, as ruff applies them.

A check builds a `Fix` from the nodes it saw, through a `FixContext` that
knows the text and the module's import aliases (so a fix says `F.softplus`
where the user imported `torch.nn.functional as F`, and adds an import only
when nothing usable is imported).
"""

from __future__ import annotations

import ast
from typing import NamedTuple

from stabcheck.source import SourceMap
from stabcheck.values import Qual

SAFE, UNSAFE = "safe", "unsafe"


# Named tuples: they pickle to worker processes and serialise to the JSON
# cache as plain lists (`Fix.load` turns them back).
class Edit(NamedTuple):
    start: int  # character offsets [start, end) in the source
    end: int
    content: str


class Fix(NamedTuple):
    title: str
    applicability: str  # SAFE or UNSAFE
    edits: tuple[Edit, ...]

    @classmethod
    def load(cls, data) -> "Fix":
        title, applicability, edits = data
        return cls(title, applicability, tuple(Edit(*e) for e in edits))


_ATOMIC = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant)


class FixContext:
    def __init__(self, smap: SourceMap, tree: ast.Module, scope):
        self.smap = smap
        self.tree = tree
        self.scope = scope  # the walker's module scope: name -> value (set once the walker exists)

    def text(self, node: ast.AST) -> str:
        return self.smap.text(node)

    def paren(self, node: ast.AST) -> str:
        text = self.text(node)
        return text if isinstance(node, _ATOMIC) else f"({text})"

    def replace(self, node: ast.AST, content: str) -> Edit:
        start, end = self.smap.offsets(node)
        return Edit(start, end, content)

    def call_args(self, call: ast.Call, skip: int = 0) -> list[str]:
        """Source text of a call's arguments, positional ones from `skip` on."""
        out = [self.text(a) for a in call.args[skip:]]
        out += [self.text(kw) for kw in call.keywords]
        return out

    def spell(self, qualname: str) -> tuple[str, tuple[Edit, ...]]:
        """How to write `qualname` here: through an existing import if one
        covers it (`F.softplus`), else a new `from module import name`."""
        bound = {v.name: k for k, v in self.scope.vars.items() if isinstance(v, Qual) and "." not in k}
        parts = qualname.split(".")
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in bound:
                return ".".join([bound[prefix], *parts[i:]]), ()
        if qualname in bound:
            return bound[qualname], ()
        module, _, name = qualname.rpartition(".")
        if name in self.scope.vars:
            return "", ()  # the name is taken by something else: no safe spelling
        return name, (self._import_edit(f"from {module} import {name}"),)

    def _import_edit(self, statement: str) -> Edit:
        """Insert an import after the module's last top-level import (or its
        docstring)."""
        anchor = None
        for stmt in self.tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                anchor = stmt
            elif anchor is None and isinstance(stmt, ast.Expr) and isinstance(getattr(stmt, "value", None), ast.Constant) and isinstance(stmt.value.value, str):
                anchor = stmt
            elif anchor is not None:
                break
        if anchor is None:
            return Edit(0, 0, statement + "\n")
        _, end = self.smap.offsets(anchor)
        return Edit(end, end, "\n" + statement)


def select(fixes: list[Fix]) -> list[Fix]:
    """The fixes that can be applied together: in order of position, each
    one whose edits overlap no edit already chosen. The others wait for the
    next pass."""
    taken: list[tuple[int, int]] = []
    chosen: list[Fix] = []
    for fix in sorted(fixes, key=lambda f: min(e.start for e in f.edits)):
        if any(e.start < te and ts < e.end or e.start == ts for e in fix.edits for ts, te in taken):
            continue
        taken.extend((e.start, e.end) for e in fix.edits)
        chosen.append(fix)
    return chosen


def apply_edits(source: str, edits) -> str:
    out = source
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        out = out[: edit.start] + edit.content + out[edit.end :]
    return out


def apply(source: str, fixes: list[Fix]) -> tuple[str, int]:
    """Apply what `select` allows; return the new text and how many fixes."""
    chosen = select(fixes)
    return apply_edits(source, [e for fix in chosen for e in fix.edits]), len(chosen)
