"""Provenance across modules: what each module of the checked project exports.

Phase one of a run reads the modules that could export a probability (their
text mentions softmax, sigmoid, ...), walks each once with no checks, and
keeps a small summary: which top-level functions return a probability, which
classes return one when an instance is called. Phase two checks every file
with those summaries, so `from .model import Net` followed by
`nn.CrossEntropyLoss()(Net()(x), y)` is seen in another file. Summaries are
plain tuples: they travel to worker processes and into cache keys.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re

from stabcheck.filebytes import read_bytes
from stabcheck.values import Layer, Prob

# Only modules whose text mentions one of these can make a probability.
_CANDIDATE = re.compile(r"softmax|sigmoid|expit|_proba\b|Softmax|Sigmoid")

# An export: (kind, probability source). kind: "func" (calling it returns the
# probability), "class" (calling an instance does), "instance" (calling it does).
Export = tuple[str, str]
Index = dict[str, dict[str, Export]]


def module_of(path: str) -> tuple[str, str | None]:
    """(dotted module name, its package) from the `__init__.py` files above it.
    A script outside any package is importable by its stem from its folder."""
    directory, name = os.path.split(os.path.abspath(path))
    stem = name.rsplit(".", 1)[0]
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        directory, pkg = os.path.split(directory)
        parts.insert(0, pkg)
    module = ".".join(parts)
    if stem == "__init__":
        return module, module or None
    package = module.rpartition(".")[0] or None
    return module, package


def resolve_relative(level: int, module: str | None, package: str | None) -> str | None:
    """`from ..x import y` inside `package` -> the absolute module name."""
    if level == 0:
        return module
    if package is None:
        return None
    base = package.split(".")
    if level - 1 > len(base):
        return None
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else [])) or None


def is_candidate(source: str) -> bool:
    return bool(_CANDIDATE.search(source))


def export_descriptor(val) -> Export | None:
    """How a module-level value is seen from another module, if it matters."""
    from stabcheck.flow import ClassInfo, FuncInfo, Instance  # flow imports this module

    if isinstance(val, FuncInfo) and isinstance(val.ret, Prob) and not val.ret.comp:
        return ("func", val.ret.src)
    if isinstance(val, Layer):
        if isinstance(val.ret, Prob) and not val.ret.comp:
            return ("func", val.ret.src)
        if isinstance(val.ret, Layer) and isinstance(val.ret.ret, Prob):
            return ("class", val.ret.ret.src)
    if isinstance(val, (ClassInfo, Instance)):
        return None  # resolved by the walker, which can call them
    return None


def summarize(path: str) -> tuple[str, dict[str, Export]] | None:
    """Phase one for one file: (module name, exports), or None when the file
    cannot export a probability (or cannot be read or parsed)."""
    from stabcheck.engine import decode
    from stabcheck.flow import Walker

    if not path.endswith(".py"):
        return None
    try:
        source = decode(read_bytes(path))
        if not is_candidate(source):
            return None
        tree = ast.parse(source, filename=path)
        module, package = module_of(path)
        walker = Walker({}, None, package)
        walker.run(tree)
        exports = walker.exports()
    except Exception:  # the check phase reports unreadable or broken files
        return None
    return (module, exports) if exports and module else None


def candidates(paths: list[str]) -> list[str]:
    """The files whose text could make a probability (read here, cheaply,
    so only they travel to phase one's workers)."""
    out = []
    for path in paths:
        if not path.endswith(".py"):
            continue
        try:
            data = read_bytes(path)
        except OSError:
            continue
        if _CANDIDATE.search(data.decode("utf-8", "replace")):
            out.append(path)
    return out


def build_index(paths: list[str], map_fn=map) -> Index:
    """Summaries of every module among `paths` that exports a probability."""
    index: Index = {}
    for item in map_fn(summarize, paths):
        if item is not None:
            index[item[0]] = item[1]
    return index


def digest(index: Index) -> str:
    """A short fingerprint of the summaries (part of every cache key)."""
    text = repr(sorted((m, sorted(e.items())) for m, e in index.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
