"""`path:row:col: CODE message` (notebooks: `nb.ipynb:cell 3:row:col:`), then a
summary; colour only on a terminal."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import display_path, printable, where

__all__ = ["line_of", "statistics", "summary", "write_statistics", "write_text"]


def summary(diags: list[Diagnostic]) -> str:
    if not diags:
        return "All checks passed!"
    n = len(diags)
    files = len({d.path for d in diags})
    return f"Found {n} problem{'s' * (n != 1)} in {files} file{'s' * (files != 1)}."


def line_of(d: Diagnostic) -> str:
    mark = "[*] " if d.fix is not None else ""
    return f"{where(d)}: {d.code} {mark}{printable(d.message)}"


def write_text(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    if color:
        from rich.console import Console
        from rich.markup import escape

        console = Console(file=out, highlight=False, soft_wrap=True)
        for d in diags:
            path = display_path(d.path)
            pos = where(d)[len(path):]
            mark = "[*] " if d.fix is not None else ""
            console.print(f"[bold]{escape(path)}[/]{escape(pos)}: [bold red]{d.code}[/] {escape(mark)}{escape(printable(d.message))}")
        console.print(summary(diags), style="bold" if diags else "green")
        return
    for d in diags:
        out.write(line_of(d) + "\n")
    out.write(summary(diags) + "\n")


def statistics(diags: list[Diagnostic]) -> list[dict]:
    """One row per rule, most frequent first: code, name, count, fixable (how many have a fix)."""
    from stabcheck.checks import RULES

    counts = Counter(d.code for d in diags)
    fixable = Counter(d.code for d in diags if d.fix is not None)
    return [{"code": code, "name": RULES[code].slug if code in RULES else "", "count": n, "fixable": fixable[code]}
            for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def write_statistics(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    for row in statistics(diags):
        out.write(f"{row['count']:5d}\t{row['code']}\t{row['name']}\n")
    out.write(summary(diags) + "\n")
