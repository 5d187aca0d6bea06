"""Jupyter notebooks: the code cells joined into one module, IPython syntax masked.

Cells are joined in order so that an import in cell 1 resolves a call in
cell 7. Lines Python cannot parse are masked with a line of the same number:
line magics (`%time f()`), shell escapes (`!pip install`), help (`obj?`),
assignments from them (`x = !ls` -> `x = None`), automagics (`pip install x`),
and the first line of a Python-bodied cell magic (`%%time`). Cells with any
other cell magic (`%%bash`, `%%writefile`, ...) are skipped, as ruff does.
A cell that parses as it is is never masked, so `a = (b\\n % c)` keeps its
continuation line.

Findings carry `cell` (1-based index among all cells, markdown included, as
ruff counts) and rows within the cell. `source_line_numbers` maps a cell's
rows to physical lines of the .ipynb file, for SARIF, GitHub annotations and
`--add-noqa`.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field

from stabcheck.checks import SYNTAX_ERROR
from stabcheck.diagnostics import Diagnostic

SUFFIX = ".ipynb"

_LINES = re.compile(r"\r\n|\r|\n")
_LINE_REF = re.compile(r"\(((?:made )?at )?line (\d+)\)")
_CELL_MAGIC = re.compile(r"^\s*%%(\w+)")
# Cell magics whose body is Python: keep the body, mask the magic line.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug", "python", "python3", "ipython",
                                 "stabcheck"})
_ESCAPE = re.compile(r"^(\s*)(?:%|!(?!=)|\?)")
_ASSIGN = re.compile(r"^(\s*[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*)(?:%|!(?!=))")
_HELP = re.compile(r"^(\s*)[A-Za-z_][\w.]*\?{1,2}\s*$")
_AUTOMAGIC = re.compile(
    r"^(\s*)(?:pip|conda|mamba|cd|ls|pwd|env|load_ext|reload_ext|matplotlib|autoreload|pylab|who|whos|"
    r"reset|run|rm|cp|mv|mkdir|cat|clear|history|pdb|config|alias|bookmark|store)(?:\s+[^\s=(.\[,:]|\s*$)"
)


class NotebookError(ValueError):
    """Not a notebook stabcheck can read."""


@dataclass
class Notebook:
    source: str = ""  # the code cells joined, IPython syntax masked
    starts: list[int] = field(default_factory=list)  # row in `source` where each kept cell starts
    cells: list[int] = field(default_factory=list)  # 1-based index of each kept cell among all cells

    def locate(self, row: int) -> tuple[int, int]:
        """(cell, row within the cell) of a row of `source`."""
        i = max(bisect.bisect_right(self.starts, row) - 1, 0)
        return self.cells[i], row - self.starts[i] + 1

    def joined_row(self, cell: int, row: int) -> int | None:
        """The row of `source` for a row of a cell, or None if the cell is not checked."""
        try:
            return self.starts[self.cells.index(cell)] + row - 1
        except ValueError:
            return None


def _mask(line: str) -> str | None:
    """The line with its IPython syntax masked, or None when it has none."""
    m = _ASSIGN.match(line)
    if m:
        return m.group(1) + "None"
    m = _ESCAPE.match(line) or _HELP.match(line) or _AUTOMAGIC.match(line)
    if m:
        return m.group(1) + "pass"
    return None


def _cell_lines(text: str) -> list[str] | None:
    """The lines to check for one code cell, or None to skip the cell."""
    lines = _LINES.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return []
    m = _CELL_MAGIC.match(lines[0])
    if m:
        if m.group(1) not in _PYTHON_CELL_MAGICS:
            return None
        lines[0] = ""
    masked = [_mask(line) for line in lines]
    if any(x is not None for x in masked):
        try:
            ast.parse("\n".join(lines))  # valid Python as it stands (e.g. `% b` continuing an expression)
        except (SyntaxError, ValueError):
            lines = [line if x is None else x for line, x in zip(lines, masked)]
    return lines


def _cell_text(cell: dict, index: int) -> str:
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    if isinstance(source, str):
        return source
    raise NotebookError(f"cell {index}: `source` is neither a string nor a list of strings")


def _is_python(doc: dict) -> bool:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return True
    for key, sub in (("language_info", "name"), ("kernelspec", "language")):
        table = meta.get(key)
        if isinstance(table, dict) and isinstance(table.get(sub), str):
            return table[sub].lower() in ("python", "python3", "ipython", "ipython3")
    return True


def _load(data: bytes):
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # a number of more than 4,300 digits
        raise NotebookError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise NotebookError("invalid JSON: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise NotebookError("no `cells` list (stabcheck reads nbformat 4 notebooks)")
    return text, doc


def parse(data: bytes) -> Notebook:
    """The code of a notebook file's bytes. Raises NotebookError."""
    _, doc = _load(data)
    nb = Notebook()
    if not _is_python(doc):
        return nb
    parts: list[str] = []
    row = 1
    for index, cell in enumerate(doc["cells"], start=1):
        if not isinstance(cell, dict):
            raise NotebookError(f"cell {index} is not a JSON object")
        if cell.get("cell_type") != "code":
            continue
        lines = _cell_lines(_cell_text(cell, index))
        if not lines:
            continue
        nb.starts.append(row)
        nb.cells.append(index)
        parts.extend(lines)
        row += len(lines)
    nb.source = "\n".join(parts) + "\n" if parts else ""
    return nb


def check_notebook(data: bytes, path: str, codes: frozenset[str], package: str | None = None,
                   resolver=None, opt_in: frozenset[str] | None = None) -> list[Diagnostic]:
    """Check a notebook file's bytes: findings have `cell` and rows within the
    cell. `package`, `resolver` and `opt_in` as for `engine.check_source`."""
    from stabcheck.engine import check_source

    try:
        nb = parse(data)
    except NotebookError as exc:
        if SYNTAX_ERROR.code not in codes:
            return []
        return [Diagnostic(SYNTAX_ERROR.code, f"cannot read notebook: {exc}", path, 1, 1, 1, 1)]
    if not nb.cells:
        return []
    def cell_line(m: re.Match) -> str:
        cell, row = nb.locate(int(m.group(2)))
        return f"({m.group(1)}cell {cell}, line {row})"

    out = []
    for d in check_source(nb.source, path, codes, package, resolver, opt_in):
        cell, row = nb.locate(d.row)
        end_row = max(d.end_row - (d.row - row), row)
        message = _LINE_REF.sub(cell_line, d.message)  # " (made at line 12)" names a row of the joined source
        # Fix spans stay in the joined text: `--fix` rewrites it and `rewrite` maps the change to cells.
        out.append(dataclasses.replace(d, message=message, cell=cell, row=row, end_row=end_row))
    return out


def _cell_hunks(nb: Notebook, cells: list, new_source: str) -> dict[int, list]:
    """The changes from `nb.source` to `new_source`, per cell: {cell: [(start,
    end, new lines)]}, 0-based line indexes within the cell. Raises
    NotebookError for a change that spans cells or touches a masked line."""
    old = nb.source.split("\n")[:-1]
    new = new_source.split("\n")
    if new and new[-1] == "":
        new.pop()
    out: dict[int, list] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        # Joined row r is old[r - 1]; an insertion belongs to the cell of the line above it.
        rows = range(i1 + 1, i2 + 1) if i2 > i1 else [max(i1, 1)]
        where = {nb.locate(r)[0] for r in rows}
        if len(where) != 1:
            raise NotebookError("a fix would span two cells")
        cell = where.pop()
        first = nb.starts[nb.cells.index(cell)]
        lines = _LINES.split(_cell_text(cells[cell - 1], cell))
        for r in range(i1 + 1, i2 + 1):
            if r - first >= len(lines) or lines[r - first] != old[r - 1]:
                raise NotebookError("a fix would touch a line with IPython syntax")
        added = new[j1:j2]
        index = nb.cells.index(cell)
        end = nb.starts[index + 1] if index + 1 < len(nb.cells) else len(old) + 1
        if i1 == i2 and i1 + 1 == end:  # appended to the cell: the cell boundary already separates
            while added and not added[-1].strip():
                added.pop()
            if not added:
                continue
        out.setdefault(cell, []).append((i1 + 1 - first, i2 + 1 - first, added))
    return out


def rewrite(data: bytes, new_source: str) -> bytes:
    """The notebook file with its code cells changed to match the joined code
    `new_source`: only the changed cells' `source` values are rewritten in
    the file's text (unchanged lines keep their exact JSON spelling); every
    other byte stays as it was. Raises NotebookError."""
    text, doc = _load(data)
    nb = parse(data)
    cells = doc["cells"]
    hunks = _cell_hunks(nb, cells, new_source)
    spans = _source_spans(text)
    ascii_only = text.isascii()
    pieces = []
    for cell, changes in hunks.items():
        if cell not in spans:
            raise NotebookError(f"cell {cell}: cannot find its source in the file")
        lines = _LINES.split(_cell_text(cells[cell - 1], cell))
        for start, end, new_lines in sorted(changes, reverse=True):
            lines[start:end] = new_lines
        new_text = "\n".join(lines)
        start, end, elements = spans[cell]
        if elements is None:
            raw = json.dumps(new_text, ensure_ascii=ascii_only)
        else:
            raw = _list_literal(text, start, end, elements, new_text.splitlines(keepends=True), ascii_only)
        pieces.append((start, end, raw))
    for start, end, raw in sorted(pieces, reverse=True):
        text = text[:start] + raw + text[end:]
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    return bom + text.encode("utf-8")


def _list_literal(text: str, start: int, end: int, elements: list, new: list[str], ascii_only: bool) -> str:
    """A JSON list of `new` laid out as the list at text[start:end] was, with
    the unchanged elements spelled exactly as before."""
    old = [json.loads(text[a:b]) for a, b in elements]
    raws = [text[a:b] for a, b in elements]
    if elements:
        opening, closing = text[start + 1:elements[0][0]], text[elements[-1][1]:end - 1]
        sep = text[elements[0][1]:elements[1][0]] if len(elements) > 1 else "," + opening
    else:
        opening, closing, sep = "", "", ", "
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        out.extend(raws[i1:i2] if tag == "equal" else (json.dumps(s, ensure_ascii=ascii_only) for s in new[j1:j2]))
    if not out:
        return "[]"
    return "[" + opening + sep.join(out) + closing + "]"


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def _items(text: str, i: int, keyed: bool):
    """(key, start, end) of each member of the JSON object or array at text[i]."""
    i = _WS.match(text, i + 1).end()
    if text[i] in "]}":
        return
    while True:
        key = None
        if keyed:
            key, i = json.decoder.scanstring(text, i + 1)
            i = _WS.match(text, i).end() + 1  # the colon
            i = _WS.match(text, i).end()
        _, end = _DECODER.raw_decode(text, i)
        yield key, i, end
        i = _WS.match(text, end).end()
        if text[i] != ",":
            return
        i = _WS.match(text, i + 1).end()


def _source_spans(text: str) -> dict[int, tuple]:
    """For each cell (1-based): (start, end) of its `source` value in the
    file's text, and the spans of its elements when it is a list."""
    out: dict[int, tuple] = {}
    top = _WS.match(text).end()
    for key, a, _ in _items(text, top, True):
        if key != "cells" or text[a] != "[":
            continue
        for index, (_, ca, _) in enumerate(_items(text, a, False), start=1):
            if text[ca] != "{":
                continue
            for k, sa, sb in _items(text, ca, True):
                if k == "source":
                    elements = [(ea, eb) for _, ea, eb in _items(text, sa, False)] if text[sa] == "[" else None
                    out[index] = (sa, sb, elements)
    return out


def source_line_numbers(text: str) -> dict[int, int]:
    """For each code cell (1-based index): the physical line of the .ipynb text
    holding its first source line. Only cells stored one source line per JSON
    line (as Jupyter writes them) are mapped; row r of such a cell is on line
    `first + r - 1`."""
    lines, sources = _cell_sources(text)
    out: dict[int, int] = {}
    j = 0
    for index, source in sources:
        if not isinstance(source, list) or not source or not all(isinstance(s, str) for s in source):
            continue
        if any(_LINES.search(s[:-1] if s.endswith("\n") else s) for s in source) or not all(
            s.endswith("\n") for s in source[:-1]
        ):
            continue  # not one line per element
        k = j
        while k < len(lines):
            if lines[k].strip() == '"source": [' and _elements_match(lines, k + 1, source):
                out[index] = k + 2
                j = k + 1 + len(source)
                break
            k += 1
    return out


def string_source_lines(text: str) -> dict[int, int]:
    """For each code cell whose source is stored as one JSON string: the
    physical line of the .ipynb text holding it (every row of the cell is on
    that line)."""
    lines, sources = _cell_sources(text)
    out: dict[int, int] = {}
    k = 0
    for index, source in sources:
        if not isinstance(source, str):
            continue
        for j in range(k, len(lines)):
            key, _, value = lines[j].strip().partition(":")
            if key == '"source"' and _loads(value.strip().rstrip(",")) == source:
                out[index], k = j + 1, j + 1
                break
    return out


def _cell_sources(text: str) -> tuple[list[str], list[tuple[int, object]]]:
    """The lines of a notebook's text and each cell's (1-based index, `source`
    value); nothing when the text is not a notebook."""
    try:
        cells = json.loads(text)["cells"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return [], []
    if not isinstance(cells, list):
        return [], []
    return text.split("\n"), [(i, cell.get("source")) for i, cell in enumerate(cells, start=1) if isinstance(cell, dict)]


def _loads(literal: str):
    try:
        return json.loads(literal)
    except ValueError:
        return None


def _elements_match(lines: list[str], start: int, source: list[str]) -> bool:
    if start + len(source) > len(lines):
        return False
    for offset, element in enumerate(source):
        literal = lines[start + offset].strip()
        literal = literal[:-1] if literal.endswith(",") else literal
        try:
            if json.loads(literal) != element:
                return False
        except ValueError:
            return False
    return True
