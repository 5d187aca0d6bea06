"""`path:row:col: CODE message`, then a summary; colour only on a terminal."""

from __future__ import annotations

import os
from collections import Counter
from typing import TextIO

from stabcheck.diagnostics import Diagnostic


def display_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _summary(diags: list[Diagnostic]) -> str:
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
            console.print(
                f"[bold]{escape(display_path(d.path))}[/]:{d.row}:{d.col}: "
                f"[bold red]{d.code}[/] {escape(d.message)}"
            )
        console.print(_summary(diags), style="bold" if diags else "green")
        return
    for d in diags:
        out.write(f"{display_path(d.path)}:{d.row}:{d.col}: {d.code} {d.message}\n")
    out.write(_summary(diags) + "\n")


def write_statistics(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    from stabcheck.checks import RULES

    counts = Counter(d.code for d in diags)
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rule = RULES.get(code)
        out.write(f"{n:5d}\t{code}\t{rule.slug if rule else ''}\n")
    out.write(_summary(diags) + "\n")
