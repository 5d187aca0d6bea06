"""A JSON list of ruff-shaped objects, 1-based rows and columns.

Notebook findings add `"cell": N` (1-based, among all cells) and count rows
within that cell, as ruff does.
"""

from __future__ import annotations

import json
import os
from typing import TextIO

from stabcheck.diagnostics import Diagnostic


def to_dict(d: Diagnostic) -> dict:
    out = {
        "code": d.code,
        "message": d.message,
        "filename": os.path.abspath(d.path),
        "location": {"row": d.row, "column": d.col},
        "end_location": {"row": d.end_row, "column": d.end_col},
        "fix": _fix(d),
        "url": None,
        "noqa_row": d.row,
    }
    if d.cell is not None:
        out["cell"] = d.cell
    return out


def _fix(d: Diagnostic) -> dict | None:
    """ruff's shape: applicability, message, and edits with 1-based positions
    (the difference the fix makes to the file as it is now)."""
    if d.fix is None:
        return None
    from stabcheck import engine, fix_engine
    from stabcheck.source import SourceMap

    locate = None
    try:
        with open(d.path, "rb") as fh:
            data = fh.read()
        if d.cell is not None:  # spans are in the notebook's joined code cells
            from stabcheck import notebook

            nb = notebook.parse(data)
            source, locate = nb.source, nb.locate
        else:
            source = engine.decode(data)
    except (OSError, SyntaxError, UnicodeError, LookupError, ValueError):
        return None
    found = fix_engine.edits(source, d.fix)
    if found is None:
        return None
    smap = SourceMap(source)
    edits = []
    for e in found:
        (row, col), (end_row, end_col) = smap.position(e.start), smap.position(e.end)
        item = {"content": e.content}
        if locate is not None:
            item["cell"], row = locate(row)
            end_row = locate(end_row)[1]
        item.update({"location": {"row": row, "column": col}, "end_location": {"row": end_row, "column": end_col}})
        edits.append(item)
    return {"applicability": d.fix.applicability, "message": d.fix.title, "edits": edits}


def write_json(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    json.dump([to_dict(d) for d in diags], out, indent=2)
    out.write("\n")
