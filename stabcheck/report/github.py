"""GitHub Actions workflow commands: one `::error` annotation per finding.

    ::error file=train.py,line=4,col=5,endLine=4,endColumn=45,title=STB001::log of softmax ...

Escaping follows `@actions/core`: `%`, CR and LF in the message; also `:`
and `,` in property values. Columns are given only for single-line spans
(GitHub ignores them otherwise). Notebook findings point at the line of the
.ipynb file and name the cell in the message. GitHub drops annotations past
the tenth of a step; a notice then says so. Under Actions
(`$GITHUB_STEP_SUMMARY` set) the findings are also appended to the job
summary as a table.
"""

from __future__ import annotations

import os
from typing import TextIO

from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import Physical, display_path, printable, repo_relative
from stabcheck.report.text import summary


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(d: Diagnostic, physical: Physical) -> str:
    span = physical.span(d)
    message = d.message
    if d.cell is not None:
        message = f"cell {d.cell}:{d.row}:{d.col}: {message}"
    props = {"file": printable(repo_relative(d.path) or display_path(d.path))}
    if span is not None:
        row, col, end_row, end_col = span
        one_line = row == end_row and col is not None
        props["line"] = str(row)
        if one_line:
            props["col"] = str(col)
        props["endLine"] = str(end_row)
        if one_line:
            props["endColumn"] = str(end_col)
    props["title"] = d.code
    fields = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
    return f"::error {fields}::{escape_data(message)}"


# GitHub shows at most this many error annotations per step; the rest only in the log.
SHOWN_PER_STEP = 10
_SUMMARY_ROWS = 500  # the step summary is capped at 1 MiB


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_step_summary(diags: list[Diagnostic], path: str) -> None:
    """Append a Markdown table of the findings to `$GITHUB_STEP_SUMMARY`."""
    lines = ["### stabcheck", "", summary(diags), ""]
    if diags:
        lines += ["| location | rule | message |", "|---|---|---|"]
        for d in diags[:_SUMMARY_ROWS]:
            where = f"{printable(repo_relative(d.path) or display_path(d.path))}:{'' if d.cell is None else f'cell {d.cell}:'}{d.row}:{d.col}"
            lines.append(f"| `{_cell(where)}` | {d.code} | {_cell(d.message)} |")
        if len(diags) > _SUMMARY_ROWS:
            lines.append(f"\n... and {len(diags) - _SUMMARY_ROWS} more (see the step's log)")
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    except OSError:
        pass


def write_github(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    physical = Physical()
    for d in diags:
        out.write(annotation(d, physical) + "\n")
    if len(diags) > SHOWN_PER_STEP:
        note = (f"{len(diags)} findings: GitHub shows the first {SHOWN_PER_STEP} annotations of a step; "
                "this step's log lists them all")
        out.write(f"::notice title=stabcheck::{escape_data(note)}\n")
    out.write(summary(diags) + "\n")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        write_step_summary(diags, os.environ["GITHUB_STEP_SUMMARY"])
