"""A JSON list of ruff-shaped objects, 1-based rows and columns."""

from __future__ import annotations

import json
import os
from typing import TextIO

from stabcheck.diagnostics import Diagnostic


def to_dict(d: Diagnostic) -> dict:
    return {
        "code": d.code,
        "message": d.message,
        "filename": os.path.abspath(d.path),
        "location": {"row": d.row, "column": d.col},
        "end_location": {"row": d.end_row, "column": d.end_col},
        "fix": None,
        "url": None,
        "noqa_row": d.row,
    }


def write_json(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    json.dump([to_dict(d) for d in diags], out, indent=2)
    out.write("\n")
