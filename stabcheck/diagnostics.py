"""What a check reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    path: str
    row: int  # 1-based (in a notebook: within the cell)
    col: int  # 1-based, in characters
    end_row: int
    end_col: int
    cell: int | None = None  # notebooks: 1-based index of the cell among all cells

    def sort_key(self):
        return (self.path, self.cell or 0, self.row, self.col, self.code)
