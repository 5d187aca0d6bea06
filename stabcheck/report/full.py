"""`--output-format full`: each finding's line as `text` prints it, then the
source line with a caret under the span (a notebook's line of its cell).

    bad.py:4:5: STB001 [*] log of softmax is -inf once ...
      |
    4 | y = torch.log(F.softmax(torch.randn(3), -1))
      |     ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
      |
"""

from __future__ import annotations

from typing import TextIO

from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import CheckedCode, printable
from stabcheck.report.text import line_of, summary


def excerpt(d: Diagnostic, code: CheckedCode) -> list[str]:
    """The gutter, source line and caret lines for one finding; [] when the line is not known."""
    checked = code.get(d.path)
    if checked is None:
        return []
    smap, nb = checked
    row = d.row if nb is None else nb.joined_row(d.cell, d.row) if d.cell is not None else None
    if row is None or not 0 < row <= len(smap.lines):
        return []
    raw = smap.lines[row - 1]
    start = min(d.col - 1, len(raw))
    end = d.end_col - 1 if d.end_row == d.row else len(raw.rstrip())
    # Tabs and control characters take other widths on screen: measure the caret on the shown text.
    before, through = _shown(raw[:start]), _shown(raw[:max(end, start + 1)])
    number = str(d.row)
    pad = " " * len(number)
    caret = " " * len(before) + "^" * max(len(through) - len(before), 1)
    return [f"{pad} |", f"{number} | {_shown(raw).rstrip()}", f"{pad} | {caret}", f"{pad} |"]


def _shown(text: str) -> str:
    return printable(text.expandtabs(4))


def write_full(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    code = CheckedCode()
    for d in diags:
        out.write(line_of(d) + "\n")
        for line in excerpt(d, code):
            out.write(line + "\n")
        out.write("\n")
    out.write(summary(diags) + "\n")
