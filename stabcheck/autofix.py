"""`stabcheck check --fix / --diff`: apply the findings' fixes file by file,
re-checking after each pass (a fix can reveal or overlap another), and write
the result or print it as a unified diff.

The fixes are recomputed from the file as it is read here: findings served
by the cache only say which files to look at (a cache anyone can write must
never decide what goes into a file). Writes go through safe_write.
"""

from __future__ import annotations

import difflib
import io
import sys
import tokenize
from dataclasses import replace
from typing import TextIO

from stabcheck import engine, fixes, safe_write
from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import display_path
from stabcheck.source import SourceMap

_MAX_PASSES = 10


def applicable(d: Diagnostic, unsafe: bool) -> bool:
    return d.fix is not None and (d.fix.applicability == fixes.SAFE or unsafe)


def visible(diags: list[Diagnostic], unsafe: bool) -> tuple[list[Diagnostic], int]:
    """Drop the fixes the flags do not allow (so `[*]` means "--fix fixes
    this"); also return how many unsafe fixes were hidden."""
    hidden = sum(1 for d in diags if d.fix is not None and not applicable(d, unsafe))
    return [d if d.fix is None or applicable(d, unsafe) else replace(d, fix=None) for d in diags], hidden


def fix_files(diags: list[Diagnostic], jobs: list, unsafe: bool, diff: bool, out: TextIO | None = None,
              roots: list[str] | None = None, err: TextIO | None = None):
    """Apply fixes; return (remaining diagnostics, number of fixes applied).
    With `diff`, nothing is written: the changes are printed. Files that
    resolve outside `roots` (real paths) are not written."""
    out, err = out or sys.stdout, err or sys.stderr
    by_path: dict[str, list[Diagnostic]] = {}
    for d in diags:
        by_path.setdefault(d.path, []).append(d)
    job_of = {job.path: job for job in jobs}
    remaining: list[Diagnostic] = []
    applied_total = 0
    for path, found in by_path.items():
        job = job_of.get(path)
        if job is None or not any(applicable(d, unsafe) for d in found):
            remaining.extend(found)
            continue
        kind = _Notebook if path.endswith(".ipynb") else _Python
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            doc = kind(path, job, data)
        except (OSError, SyntaxError, UnicodeError, LookupError, ValueError):
            remaining.extend(found)
            continue
        text, applied = _passes(doc, unsafe, err)
        if not applied:
            remaining.extend(doc.report(data))
            continue
        try:
            new_data = doc.encode(text)
        except (UnicodeError, ValueError) as exc:
            _say(err, path, f"fixes not written: {exc}")
            remaining.extend(doc.report(data))
            continue
        if diff:
            name = display_path(path).lstrip("/")
            before, after = doc.shown(data), doc.shown(new_data)
            out.writelines(difflib.unified_diff(
                before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{name}", f"b/{name}"))
        else:
            why = safe_write.replace_if_unchanged(path, new_data, safe_write.digest(data), roots)
            if why:
                _say(err, path, why)
                remaining.extend(doc.report(data))
                continue
        applied_total += applied
        remaining.extend(doc.report(new_data))
    remaining.sort(key=Diagnostic.sort_key)
    return remaining, applied_total


def _passes(doc, unsafe: bool, err: TextIO) -> tuple[str, int]:
    """Fix, re-check, fix again; a fix dropped once is not retried."""
    from stabcheck import fix_engine  # libcst: only when something gets fixed

    text, applied_total = doc.text, 0
    found = doc.check(text)
    dropped: set = set()
    for _ in range(_MAX_PASSES):
        smap = SourceMap(text)
        todo = {d.fix: d for d in found if applicable(d, unsafe) and _key(d, smap) not in dropped}
        if not todo:
            break
        result = fix_engine.apply(text, list(todo), doc.accept)
        for fix, why in result.dropped:
            d = todo[fix]
            dropped.add(_key(d, smap))
            _say(err, doc.path, f"{doc.where(d)}: {d.code} fix not applied: {why}")
        if not result.applied:
            break
        applied_total += len(result.applied)
        text = result.source
        found = doc.check(text)
    return text, applied_total


def _key(d: Diagnostic, smap: SourceMap):
    """A finding across passes (rows move when a fix above adds lines)."""
    row, col, end_row, end_col = d.fix.ops[0].spans[0]
    return d.code, d.fix.title, smap.source[smap.offset(row, col):smap.offset(end_row, end_col)]


def _say(err: TextIO, path: str, message: str) -> None:
    print(f"stabcheck: {display_path(path)}: {message}", file=err)


class _Python:
    def __init__(self, path: str, job, data: bytes):
        self.path, self.job = path, job
        self.text = engine.decode(data)
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        self.encoding = "utf-8" if encoding == "utf-8-sig" else encoding
        self.bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
        self.accept = None

    def check(self, text: str) -> list[Diagnostic]:
        return engine.check_source(text, self.path, self.job.codes, self.job.package, _resolver(), self.job.opt_in)

    def report(self, data: bytes) -> list[Diagnostic]:
        return self.check(engine.decode(data))

    def encode(self, text: str) -> bytes:
        return self.bom + text.encode(self.encoding)

    def shown(self, data: bytes) -> str:
        return engine.decode(data)

    def where(self, d: Diagnostic) -> str:
        return f"{d.row}:{d.col}"


class _Notebook:
    """Fixes run on the joined code cells; only the fixed cells' source lines
    change in the file."""

    def __init__(self, path: str, job, data: bytes):
        from stabcheck import notebook

        self.path, self.job, self.data = path, job, data
        self.nb = notebook.parse(data)
        self.text = self.nb.source
        self.accept = self._mappable

    def _mappable(self, new_source: str) -> str | None:
        from stabcheck import notebook

        try:
            notebook.rewrite(self.data, new_source)
        except notebook.NotebookError as exc:
            return str(exc)
        return None

    def check(self, text: str) -> list[Diagnostic]:
        return engine.check_source(text, self.path, self.job.codes, self.job.package, _resolver(), self.job.opt_in)

    def report(self, data: bytes) -> list[Diagnostic]:
        from stabcheck import notebook

        return notebook.check_notebook(data, self.path, self.job.codes, self.job.package, _resolver(), self.job.opt_in)

    def encode(self, text: str) -> bytes:
        from stabcheck import notebook

        return notebook.rewrite(self.data, text)

    def shown(self, data: bytes) -> str:
        return data.decode("utf-8-sig")

    def where(self, d: Diagnostic) -> str:
        cell, row = self.nb.locate(d.row)
        return f"cell {cell}:{row}:{d.col}"


def _resolver():
    return engine._PROJECT.get if engine._PROJECT else None
