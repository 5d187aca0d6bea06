"""`stabcheck check --add-noqa`: suppress every current finding in place.

Each line with findings gets `# noqa: CODES`; a `# noqa: ...` comment already
on the line gets the new codes merged into it (`# noqa: E501` becomes
`# noqa: E501, STB002`), another comment gets the directive after it. A
finding on a line that ends inside a multi-line string, or with a backslash
continuation, cannot carry a comment: it is skipped and counted. In a
notebook the directive goes into the cell's source line inside the .ipynb
JSON, leaving every other byte as it was. STB9xx findings are not
suppressed (fix the file instead).
"""

from __future__ import annotations

import io
import json
import re
import tokenize
from collections import defaultdict
from typing import TextIO

from stabcheck.safe_write import digest, replace_if_unchanged

from stabcheck.diagnostics import Diagnostic
from stabcheck.suppress import _LINE, _SPLIT, _comments

_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")
_NOT_SUPPRESSED = ("STB9",)


def _string_rows(source: str) -> set[int]:
    """Rows whose end lies inside a string token (no comment can go there)."""
    rows: set[int] = set()
    fstring_starts: list[int] = []
    start_type = getattr(tokenize, "FSTRING_START", None)
    end_type = getattr(tokenize, "FSTRING_END", None)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.STRING and tok.start[0] < tok.end[0]:
                rows.update(range(tok.start[0], tok.end[0]))
            elif start_type is not None and tok.type == start_type:
                fstring_starts.append(tok.start[0])
            elif end_type is not None and tok.type == end_type and fstring_starts:
                rows.update(range(fstring_starts.pop(), tok.end[0]))
    except (tokenize.TokenError, SyntaxError):
        pass
    return rows


def _with_noqa(line: str, codes: set[str], comment: tuple[int, str] | None) -> str:
    if comment is not None:
        col0, text = comment
        for m in _LINE.finditer(text):
            if m.group("codes"):
                have = _SPLIT.split(m.group("codes").strip())
                merged = have + sorted(codes - {h.upper() for h in have})
                start, end = col0 + m.start("codes"), col0 + m.end("codes")
                return line[:start] + ", ".join(merged) + line[end:]
    return line.rstrip() + f"  # noqa: {', '.join(sorted(codes))}"


def plan(source: str, wanted: dict[int, set[str]]) -> tuple[dict[int, str], int]:
    """New text for each row of `source` that needs a directive, and the
    number of findings that cannot get one."""
    lines = _LINE_BREAK.split(source)[::2]
    blocked = _string_rows(source)
    comments = {row: (col0, text) for row, col0, text in _comments(source)}
    new: dict[int, str] = {}
    skipped = 0
    for row, codes in sorted(wanted.items()):
        if row in blocked or not 0 < row <= len(lines) or lines[row - 1].rstrip().endswith("\\"):
            skipped += len(codes)
            continue
        new[row] = _with_noqa(lines[row - 1], codes, comments.get(row))
    return new, skipped


def _rewrite_python(path: str, wanted: dict[int, set[str]]) -> tuple[int, int]:
    with open(path, "rb") as fh:
        data = fh.read()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    bom = text.startswith("\ufeff")
    source = text[1:] if bom else text
    new, skipped = plan(source, wanted)
    if new:
        parts = _LINE_BREAK.split(source)
        for row, line in new.items():
            parts[2 * (row - 1)] = line
        if not _write(path, data, (("\ufeff" if bom else "") + "".join(parts)).encode(encoding)):
            return 0, skipped + sum(len(codes) for codes in wanted.values())
    return len(new), skipped


def _rewrite_notebook(path: str, wanted: dict[tuple[int, int], set[str]]) -> tuple[int, int]:
    from stabcheck.notebook import NotebookError, parse, source_line_numbers

    with open(path, "rb") as fh:
        data = fh.read()
    total = sum(len(codes) for codes in wanted.values())
    try:
        nb = parse(data)
        text = data.decode("utf-8-sig")
    except (NotebookError, UnicodeDecodeError):
        return 0, total
    first = source_line_numbers(text)
    physical = text.split("\n")
    joined: dict[int, set[str]] = {}
    where: dict[int, int] = {}
    skipped = 0
    for (cell, row), codes in wanted.items():
        at = nb.joined_row(cell, row)
        if at is None or cell not in first:  # sources not stored one line per JSON line
            skipped += len(codes)
            continue
        joined[at] = codes
        where[at] = first[cell] + row - 1
    new, more = plan(nb.source, joined)
    for at, line in new.items():
        literal = physical[where[at] - 1]
        body = literal.strip()
        comma = body.endswith(",")
        body = body[:-1] if comma else body
        old = json.loads(body)
        ascii_only = body == json.dumps(old)
        replacement = json.dumps(line + ("\n" if old.endswith("\n") else ""), ensure_ascii=ascii_only)
        indent = literal[: len(literal) - len(literal.lstrip())]
        physical[where[at] - 1] = indent + replacement + ("," if comma else "") + literal[len(literal.rstrip()):]
    if new and not _write(path, data, ("\ufeff" if data.startswith(b"\xef\xbb\xbf") else "").encode()
                          + "\n".join(physical).encode("utf-8")):
        return 0, total
    return len(new), skipped + more


def _write(path: str, old: bytes, new: bytes) -> bool:
    """Atomically, and only if the file still holds the bytes the directives were planned on."""
    return replace_if_unchanged(path, new, digest(old)) is None


def add_noqa(diags: list[Diagnostic]) -> tuple[int, int]:
    """Write directives for `diags`; returns (lines changed, findings skipped)."""
    by_file: dict[str, dict] = defaultdict(lambda: defaultdict(set))
    for d in diags:
        if not d.code.startswith(_NOT_SUPPRESSED):
            key = d.row if d.cell is None else (d.cell, d.row)
            by_file[d.path][key].add(d.code)
    added = skipped = 0
    for path, wanted in by_file.items():
        try:
            if path.endswith(".ipynb"):
                a, s = _rewrite_notebook(path, wanted)
            else:
                a, s = _rewrite_python(path, wanted)
        except (OSError, UnicodeError, SyntaxError, ValueError):
            a, s = 0, sum(len(codes) for codes in wanted.values())
        added += a
        skipped += s
    return added, skipped


def report(added: int, skipped: int, out: TextIO) -> None:
    out.write(f"Added {added} noqa directive{'s' * (added != 1)}.\n")
    if skipped:
        out.write(
            f"Skipped {skipped} finding{'s' * (skipped != 1)} on lines that cannot carry a comment "
            "(inside a multi-line string, after a backslash, or in a notebook not stored one line per JSON line).\n"
        )
