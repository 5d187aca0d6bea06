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
        "fix": None,
        "url": None,
        "noqa_row": d.row,
    }
    if d.cell is not None:
        out["cell"] = d.cell
    return out


def write_json(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    json.dump([to_dict(d) for d in diags], out, indent=2)
    out.write("\n")
