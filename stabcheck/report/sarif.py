"""SARIF 2.1.0 for GitHub code scanning and other SARIF viewers.

One run; `tool.driver.rules` lists every registry rule with its catalog page
as help; each result points at the file relative to the working directory
(`%SRCROOT%`). Notebook findings point at the physical line of the .ipynb
file and keep the cell and row in `properties`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from stabcheck import __version__
from stabcheck.diagnostics import Diagnostic
from stabcheck.report.locations import Physical, repo_relative

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_MAX_TEXT = 1024  # GitHub's cap on shortDescription/fullDescription


def _descriptor(rule, page: Path | None) -> dict:
    markdown = page.read_text(encoding="utf-8") if page is not None else ""
    # The catalog page's first paragraph under its title says what the rule is about.
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", markdown) if p.strip() and not p.lstrip().startswith("#")]
    full = " ".join(paragraphs[0].split()) if paragraphs else rule.summary
    out = {
        "id": rule.code,
        "name": rule.slug,
        "shortDescription": {"text": rule.summary[:_MAX_TEXT]},
        "fullDescription": {"text": full[:_MAX_TEXT]},
        "help": {"text": markdown or rule.summary, "markdown": markdown or rule.summary},
        "defaultConfiguration": {"level": "error"},
        "properties": {"tags": ["numerical-stability"] if rule.check is not None else ["stabcheck"]},
    }
    return out


def _artifact(path: str) -> dict:
    rel = repo_relative(path)
    if rel is None:
        return {"uri": Path(os.path.abspath(path)).as_uri()}
    return {"uri": quote(rel, errors="surrogateescape"), "uriBaseId": "%SRCROOT%"}  # a name's raw bytes, %-encoded


def to_sarif(diags: list[Diagnostic]) -> dict:
    from stabcheck.catalog import pages
    from stabcheck.checks import RULES

    catalog = pages()
    index = {code: i for i, code in enumerate(RULES)}
    physical = Physical()
    results = []
    for d in diags:
        span = physical.span(d)
        message = d.message
        if span is None or span[1] is None:  # a notebook cell not stored one source line per JSON line
            message = f"cell {d.cell}, line {d.row}: {message}"
        row, col, end_row, end_col = span or (1, None, 1, None)
        region = {"startLine": row, "startColumn": col, "endLine": end_row, "endColumn": end_col}
        result = {
            "ruleId": d.code,
            "level": "error",
            "message": {"text": message},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": _artifact(d.path),
                    "region": {k: v for k, v in region.items() if v is not None},
                }
            }],
        }
        if d.code in index:
            result["ruleIndex"] = index[d.code]
        if d.cell is not None:
            result["properties"] = {"cell": d.cell, "cellLine": d.row, "cellColumn": d.col}
        results.append(result)
    cwd = Path.cwd().as_uri().rstrip("/") + "/"
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "stabcheck",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [_descriptor(rule, catalog.get(code)) for code, rule in RULES.items()],
            }},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": cwd}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }


def write_sarif(diags: list[Diagnostic], out: TextIO, color: bool = False) -> None:
    json.dump(to_sarif(diags), out, indent=2)
    out.write("\n")
