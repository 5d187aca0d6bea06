"""What a check reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    path: str
    row: int  # 1-based
    col: int  # 1-based, in characters
    end_row: int
    end_col: int

    def sort_key(self):
        return (self.path, self.row, self.col, self.code)
