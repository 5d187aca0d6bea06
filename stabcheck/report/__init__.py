"""Output formats. Each writer takes the diagnostics and a text stream."""

from __future__ import annotations

from stabcheck.report.json_format import write_json
from stabcheck.report.text import write_statistics, write_text

WRITERS = {"text": write_text, "json": write_json}

__all__ = ["WRITERS", "write_json", "write_statistics", "write_text"]
