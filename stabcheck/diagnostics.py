"""What a check reports."""

from __future__ import annotations

from dataclasses import dataclass

from stabcheck.fixes import Fix


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
    fix: Fix | None = None

    def __post_init__(self):
        if self.fix is not None and not isinstance(self.fix, Fix):  # read back from the JSON cache
            object.__setattr__(self, "fix", Fix.load(self.fix))

    def sort_key(self):
        return (self.path, self.cell or 0, self.row, self.col, self.code)
