"""A JSON list of ruff-shaped objects, 1-based rows and columns.

Notebook findings add `"cell": N` (1-based, among all cells) and count rows
within that cell, as ruff does.
"""

from __future__ import annotations

import json
import os
from typing import TextIO

from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import CheckedCode


def to_dict(d: Diagnostic, code: CheckedCode | None = None) -> dict:
    out = {
        "code": d.code,
        "message": d.message,
        "filename": os.path.abspath(d.path),
        "location": {"row": d.row, "column": d.col},
        "end_location": {"row": d.end_row, "column": d.end_col},
        "fix": _fix(d, code or CheckedCode()),
        "url": None,
        "noqa_row": d.row,
    }
    if d.cell is not None:
        out["cell"] = d.cell
    return out


def _fix(d: Diagnostic, code: CheckedCode) -> dict | None:
    """ruff's shape: applicability, message, and edits with 1-based positions
    (the difference the fix makes to the code as it was checked)."""
    checked = code.get(d.path) if d.fix is not None else None
    if checked is None:
        return None
    from stabcheck import fix_engine  # libcst: only when a fix is shown

    smap, nb = checked
    locate = nb.locate if nb is not None else None  # offsets are in the notebook's joined code cells
    found = fix_engine.edits(smap.source, d.fix)
    if found is None:
        return None
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


def write_statistics_json(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    from stabcheck.report.text import statistics

    json.dump(statistics(diags), out, indent=2)
    out.write("\n")


def write_json(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    code = CheckedCode()
    json.dump([to_dict(d, code) for d in diags], out, indent=2)
    out.write("\n")
