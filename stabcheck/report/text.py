"""`path:row:col: CODE message` (notebooks: `nb.ipynb:cell 3:row:col:`), then a
summary; colour only on a terminal."""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import display_path, where

__all__ = ["summary", "write_statistics", "write_text"]


def summary(diags: list[Diagnostic]) -> str:
    if not diags:
        return "All checks passed!"
    n = len(diags)
    files = len({d.path for d in diags})
    return f"Found {n} problem{'s' * (n != 1)} in {files} file{'s' * (files != 1)}."


def write_text(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    if color:
        from rich.console import Console
        from rich.markup import escape

        console = Console(file=out, highlight=False, soft_wrap=True)
        for d in diags:
            path = display_path(d.path)
            pos = where(d)[len(path):]
            mark = "[*] " if d.fix is not None else ""
            console.print(f"[bold]{escape(path)}[/]{escape(pos)}: [bold red]{d.code}[/] {escape(mark)}{escape(d.message)}")
        console.print(summary(diags), style="bold" if diags else "green")
        return
    for d in diags:
        mark = "[*] " if d.fix is not None else ""
        out.write(f"{where(d)}: {d.code} {mark}{d.message}\n")
    out.write(summary(diags) + "\n")


def write_statistics(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    from stabcheck.checks import RULES

    counts = Counter(d.code for d in diags)
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rule = RULES.get(code)
        out.write(f"{n:5d}\t{code}\t{rule.slug if rule else ''}\n")
    out.write(summary(diags) + "\n")
