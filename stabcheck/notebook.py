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
        # Fix offsets stay in the joined text: `apply_fixes` maps them to cells.
        out.append(dataclasses.replace(d, message=message, cell=cell, row=row, end_row=end_row))
    return out


def apply_fixes(data: bytes, fix_list) -> tuple[bytes, int]:
    """Apply fixes (offsets in the joined code, as `check_notebook` reports
    them) to the cells of a notebook file; return the new file and how many
    fixes went in. A fix whose edits touch a masked line is left out."""
    from stabcheck.fixes import Edit, apply_edits, select
    from stabcheck.source import SourceMap

    text, doc = _load(data)
    nb = parse(data)
    joined = SourceMap(nb.source)
    joined_lines = joined.lines
    cells = doc["cells"]
    originals = {k: _cell_text(cells[k - 1], k) for k in nb.cells}

    def to_cell(offset: int):
        row, col = joined.position(offset)
        cell, cell_row = nb.locate(row)
        lines = _LINES.split(originals[cell])
        if cell_row > len(lines) or lines[cell_row - 1] != joined_lines[row - 1]:
            return None  # a masked line
        start = sum(len(line) + 1 for line in lines[: cell_row - 1])
        return cell, start + col - 1

    local = {}
    for fix in fix_list:
        mapped = []
        for e in fix.edits:
            a, b = to_cell(e.start), to_cell(e.end if e.end > e.start else e.start)
            if a is None or b is None or a[0] != b[0]:
                break
            mapped.append((a[0], Edit(a[1], b[1], e.content)))
        else:
            local[fix] = mapped
    chosen = select(list(local))
    by_cell: dict[int, list] = {}
    for fix in chosen:
        for cell, e in local[fix]:
            by_cell.setdefault(cell, []).append(e)
    for cell, edits in by_cell.items():
        new = apply_edits(originals[cell], edits)
        old = cells[cell - 1].get("source")
        cells[cell - 1]["source"] = new.splitlines(keepends=True) if isinstance(old, list) else new
    indent = re.match(r"\{\r?\n( *)", text)
    out = json.dumps(doc, indent=len(indent.group(1)) if indent else 1, ensure_ascii=False) + "\n"
    return out.encode("utf-8"), len(chosen)


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
