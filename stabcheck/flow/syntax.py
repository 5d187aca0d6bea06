"""Pure helpers over `ast` nodes: constants, operand keys, call arguments."""

from __future__ import annotations

import ast
import struct
from typing import Iterable

from stabcheck import names as N
from stabcheck.values import Const


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


def call_arg(call: ast.Call, pos: int, kws: Iterable[str]) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg in kws:
            return kw.value
    if 0 <= pos < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: pos + 1]):
        return call.args[pos]
    return None


def kw_true(call: ast.Call, name: str) -> bool:
    for kw in call.keywords:
        if kw.arg == name:
            return isinstance(kw.value, ast.Constant) and kw.value.value is True
    return False


def numeric_range(node) -> tuple[float, float] | None:
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


def number(node: ast.AST, val) -> float | None:
    c = const_value(node)
    if c is None and isinstance(val, Const):
        return val.value
    return c




def exp_operand(node: ast.AST) -> ast.AST | None:
    """`x` of `exp(x)` / `x.exp()`."""
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Attribute) and not node.args and not node.keywords:
        return node.func.value
    return node.args[0] if node.args else None
