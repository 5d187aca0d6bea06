"""Files -> parse once -> every enabled check in one walk -> diagnostics.

Per file: read bytes, decode as Python does (BOM, coding cookie), parse with
`ast`, walk once, drop suppressed findings. Problems with a file become
STB9xx diagnostics for that file; the other files are still checked.

There is no text prefilter: measured on keras/src, searching each file for
the checks' trigger words cost as much as walking every file (0.65 s vs
0.72 s), and every file has to be parsed anyway to report syntax errors.
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

from stabcheck.checks import CHECKS, INTERNAL_ERROR, IO_ERROR, SYNTAX_ERROR, UNUSED_NOQA
from stabcheck import project
from stabcheck.diagnostics import Diagnostic
from stabcheck.filebytes import read_bytes
from stabcheck.fixes import FixContext
from stabcheck.source import SourceMap
from stabcheck.flow import EVENTS, Walker
from stabcheck.flow.facts import Context, is_evaluation_path
from stabcheck.suppress import Suppressions, unused_noqa

# Deeply nested generated code: recursion in the walk is bounded by nesting
# depth, not by file size.
_RECURSION_LIMIT = 10_000
# Below this many files a process pool costs more than it saves.
_POOL_THRESHOLD = 16


@dataclass(frozen=True)
class FileJob:
    path: str  # as shown to the user
    codes: frozenset[str]  # enabled for this file (after per-file ignores)
    # Codes whose opt-in shapes are reported too (selected by code, prefix or
    # ALL rather than by the default selection); None: every enabled code.
    opt_in: frozenset[str] | None = None
    package: str | None = None  # for relative imports
    project: str = ""  # fingerprint of the project's module summaries


# Module summaries of the project being checked (see project.py); set before
# the files are checked, in this process and in each worker.
_PROJECT: dict = {}
_PROJECT_DIGEST = project.digest({})


def _install_project(index: dict) -> None:
    global _PROJECT, _PROJECT_DIGEST
    _PROJECT, _PROJECT_DIGEST = index, project.digest(index)
    _raise_recursion_limit()


def decode(data: bytes) -> str:
    """Decode source bytes the way the interpreter does."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def check_source(
    source: str, path: str, codes: frozenset[str], package: str | None = None, resolver=None,
    opt_in: frozenset[str] | None = None,
) -> list[Diagnostic]:
    """Check one file's text. Never raises for bad input. `resolver` maps a
    dotted module name to its exports (project.py), for imports from the
    checked project; `package` places relative imports; `opt_in` as in
    `FileJob`."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:
        return _syntax_error(exc, source, path, codes)
    except (RecursionError, MemoryError):
        return _meta(SYNTAX_ERROR.code, "too deeply nested for Python's parser", path, codes)
    checks = [check for check in CHECKS if check.code in codes]
    if not checks:
        return []
    smap = SourceMap(source)
    raw: list[tuple] = []

    def report(code, node, message, fix=None, tier_opt_in=False):
        if not tier_opt_in or opt_in is None or code in opt_in:
            raw.append((code, node, message, fix))

    ctx = FixContext(smap, tree, None)
    facts = Context(evaluation=is_evaluation_path(path))
    instances = [check(report, ctx, facts) for check in checks]
    listeners = {ev: [getattr(c, "on_" + ev) for c in instances if hasattr(c, "on_" + ev)] for ev in EVENTS}
    try:
        walker = Walker(listeners, resolver, package, facts)
        ctx.scope = walker.scope
        walker.run(tree)
    except RecursionError:  # CPython itself cannot compile nesting this deep (its compiler's limit is lower)
        return _meta(SYNTAX_ERROR.code, "nested too deeply to analyse (past Python's recursion limit); file skipped",
                     path, codes)
    except Exception as exc:  # a bug in stabcheck: report it on the file, keep going
        return _meta(INTERNAL_ERROR.code, f"internal error: {type(exc).__name__}: {exc}", path, codes)
    if not raw and UNUSED_NOQA.code not in codes:
        return []
    suppressions = Suppressions(source)
    out = []
    seen = set()
    fired = set()
    for code, node, message, fix in raw:
        row, col, end_row, end_col = smap.span(node)
        fired.add((code, row))
        if suppressions.suppressed(code, row) or (code, row, col) in seen:
            continue
        seen.add((code, row, col))
        out.append(Diagnostic(code, message, path, row, col, end_row, end_col, fix=fix))
    return out + unused_noqa(source, fired, codes, path)


def check_file(job: FileJob) -> list[Diagnostic]:
    try:
        data = read_bytes(job.path)
    except OSError as exc:
        return _meta(IO_ERROR.code, f"cannot read file: {exc.strerror or exc}", job.path, job.codes)
    return check_data(job, data)


def check_data(job: FileJob, data: bytes) -> list[Diagnostic]:
    """Check a file's bytes (`check -` has no file to read)."""
    if job.path.endswith(".ipynb"):
        from stabcheck.notebook import check_notebook

        return check_notebook(data, job.path, job.codes, job.package, _PROJECT.get if _PROJECT else None, job.opt_in)
    try:
        source = decode(data)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        return _meta(SYNTAX_ERROR.code, f"cannot decode file: {_decode_reason(exc, data)}", job.path, job.codes)
    return check_source(source, job.path, job.codes, job.package, _PROJECT.get if _PROJECT else None, job.opt_in)


def check_jobs(jobs: list[FileJob], workers: int | None = None, cache=None) -> list[Diagnostic]:
    """Check files, in a process pool when there are enough of them: first
    the project's module summaries, then every file with them. A
    `cache.Cache` serves both phases for files whose key it knows."""
    workers = workers or os.cpu_count() or 1
    pool = None
    if workers > 1 and len(jobs) >= _POOL_THRESHOLD:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_raise_recursion_limit)
    try:
        chunk = max(1, min(32, len(jobs) // (workers * 8)))
        summarize = partial(pool.map, chunksize=max(1, chunk // 4)) if pool else map
        index = project.build_index(
            project.candidates([job.path for job in jobs]), cache.summaries(summarize) if cache else summarize
        )
        _install_project(index)
        fingerprint = project.digest(index)
        jobs = [replace(job, package=project.module_of(job.path)[1], project=fingerprint) for job in jobs]
        hits, jobs = cache.lookup(jobs) if cache else ([], jobs)
        out: list[Diagnostic] = []
        if pool is None:
            for job in jobs:
                out.extend(check_file(job))
        else:
            # The summaries travel with each chunk of work (they are small).
            for diags in pool.map(partial(_check_in_project, index), jobs, chunksize=chunk):
                out.extend(diags)
    finally:
        if pool is not None:
            pool.shutdown()
    if cache is not None:
        cache.store(jobs, out)
    out += hits
    out.sort(key=Diagnostic.sort_key)
    return out


def _check_in_project(index: dict, job: FileJob) -> list[Diagnostic]:
    if _PROJECT_DIGEST != job.project:
        _install_project(index)
    return check_file(job)


def _raise_recursion_limit() -> None:
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)


def _meta(code: str, message: str, path: str, codes: frozenset[str], row: int = 1, col: int = 1) -> list[Diagnostic]:
    if code not in codes:
        return []
    return [Diagnostic(code, message, path, row, col, row, col)]


def _syntax_error(exc: Exception, source: str, path: str, codes) -> list[Diagnostic]:
    if isinstance(exc, SyntaxError):
        row = exc.lineno or 1
        col = exc.offset or 1
        msg = exc.msg or "invalid syntax"
    else:  # ValueError: NUL bytes on older Pythons
        msg = str(exc)
        row, col = 1, 1
    if "\x00" in source and ("null" in msg.lower() or not isinstance(exc, SyntaxError)):
        idx = source.index("\x00")
        row = source.count("\n", 0, idx) + 1
        col = idx - (source.rfind("\n", 0, idx) + 1) + 1
        msg = "source contains a NUL byte"
    elif isinstance(exc, SyntaxError) and _PYTHON2.search(msg):
        # A tolerant Python 2 parse is not worth it: such files are legacy
        # code nobody trains with today, and a guessed tree would give guessed findings.
        msg += " (Python 2 source? stabcheck reads Python 3 only; the file was not checked)"
    return _meta(SYNTAX_ERROR.code, f"syntax error: {msg}", path, codes, max(row, 1), max(col, 1))


_PYTHON2 = re.compile(r"Missing parentheses in call to '(print|exec)'|print\(\.\.\.\)|invalid decimal literal|leading zeros")


def _decode_reason(exc: Exception, data: bytes) -> str:
    if isinstance(exc, SyntaxError):  # detect_encoding: bad bytes in the first two lines
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as utf8_exc:
            exc = utf8_exc
    if isinstance(exc, UnicodeDecodeError):
        row = data.count(b"\n", 0, exc.start) + 1
        return f"invalid {exc.encoding} byte 0x{data[exc.start]:02x} at line {row}"
    return str(exc)
