"""`stabcheck check --fix / --diff`: apply the findings' fixes file by file,
re-checking after each pass (a fix can reveal or overlap another), and write
the result or print it as a unified diff."""

from __future__ import annotations

import difflib
import sys
from dataclasses import replace
from typing import TextIO

from stabcheck import engine, fixes
from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import display_path

_MAX_PASSES = 10


def applicable(d: Diagnostic, unsafe: bool) -> bool:
    return d.fix is not None and (d.fix.applicability == fixes.SAFE or unsafe)


def visible(diags: list[Diagnostic], unsafe: bool) -> tuple[list[Diagnostic], int]:
    """Drop the fixes the flags do not allow (so `[*]` means "--fix fixes
    this"); also return how many unsafe fixes were hidden."""
    hidden = sum(1 for d in diags if d.fix is not None and not applicable(d, unsafe))
    return [d if d.fix is None or applicable(d, unsafe) else replace(d, fix=None) for d in diags], hidden


def fix_files(diags: list[Diagnostic], jobs: list, unsafe: bool, diff: bool, out: TextIO = sys.stdout):
    """Apply fixes; return (remaining diagnostics, number of fixes applied).
    With `diff`, nothing is written: the changes are printed."""
    by_path: dict[str, list[Diagnostic]] = {}
    for d in diags:
        by_path.setdefault(d.path, []).append(d)
    job_of = {job.path: job for job in jobs}
    resolver = engine._PROJECT.get if engine._PROJECT else None
    remaining: list[Diagnostic] = []
    applied_total = 0
    for path, found in by_path.items():
        job = job_of.get(path)
        if job is None or not any(applicable(d, unsafe) for d in found):
            remaining.extend(found)
            continue
        if path.endswith(".ipynb"):
            found, applied = _fix_notebook(path, found, job, unsafe, diff, resolver, out)
            applied_total += applied
            remaining.extend(found)
            continue
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            original = engine.decode(data)
            encoding = _encoding(data)
        except (OSError, SyntaxError, UnicodeDecodeError, LookupError):
            remaining.extend(found)
            continue
        text = original
        for _ in range(_MAX_PASSES):
            todo = [d.fix for d in found if applicable(d, unsafe)]
            if not todo:
                break
            text, applied = fixes.apply(text, todo)
            if not applied:
                break
            applied_total += applied
            found = engine.check_source(text, path, job.codes, job.package, resolver, job.opt_in)
        remaining.extend(found)
        if text == original:
            continue
        if diff:
            name = display_path(path).lstrip("/")
            out.writelines(difflib.unified_diff(
                original.splitlines(keepends=True), text.splitlines(keepends=True), f"a/{name}", f"b/{name}"))
        else:
            bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
            with open(path, "wb") as fh:
                fh.write(bom + text.encode(encoding))
    remaining.sort(key=Diagnostic.sort_key)
    return remaining, applied_total


def _fix_notebook(path, found, job, unsafe, diff, resolver, out):
    from stabcheck import notebook

    try:
        with open(path, "rb") as fh:
            original = data = fh.read()
    except OSError:
        return found, 0
    applied_total = 0
    for _ in range(_MAX_PASSES):
        todo = [d.fix for d in found if applicable(d, unsafe)]
        if not todo:
            break
        try:
            data, applied = notebook.apply_fixes(data, todo)
        except notebook.NotebookError:
            break
        if not applied:
            break
        applied_total += applied
        found = notebook.check_notebook(data, path, job.codes, job.package, resolver, job.opt_in)
    if data != original:
        if diff:
            name = display_path(path).lstrip("/")
            out.writelines(difflib.unified_diff(
                original.decode("utf-8").splitlines(keepends=True), data.decode("utf-8").splitlines(keepends=True),
                f"a/{name}", f"b/{name}"))
        else:
            with open(path, "wb") as fh:
                fh.write(data)
    return found, applied_total


def _encoding(data: bytes) -> str:
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return "utf-8" if encoding == "utf-8-sig" else encoding
