"""Output formats. Each writer takes the diagnostics and a text stream."""

from __future__ import annotations

from stabcheck.report.full import write_full
from stabcheck.report.github import write_github
from stabcheck.report.json_format import write_json, write_statistics_json
from stabcheck.report.sarif import write_sarif
from stabcheck.report.text import write_statistics, write_text

WRITERS = {"text": write_text, "full": write_full, "json": write_json, "sarif": write_sarif, "github": write_github}
STATISTICS = {"text": write_statistics, "json": write_statistics_json}  # --statistics: the formats it has

__all__ = ["STATISTICS", "WRITERS", "write_full", "write_github", "write_json", "write_sarif", "write_statistics",
           "write_text"]
