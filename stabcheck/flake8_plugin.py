"""stabcheck as a flake8 plugin (`STB` codes), for teams on flake8.

    pip install stabcheck flake8
    flake8 --extend-select STB train.py

Registered through the `flake8.extension` entry point; flake8 does the
selection (`--select`/`--extend-select`/`--ignore`), `# noqa` and its own
syntax errors (E999), so every stabcheck rule but the STB900-902 file errors
runs here, through the same engine as `stabcheck check`. Cross-module
provenance, notebooks, the cache and the configuration in pyproject.toml are
`stabcheck check`'s only.
"""

from __future__ import annotations

import ast
from typing import Iterator

from stabcheck import __version__

_FILE_ERRORS = ("STB900", "STB901", "STB902")


class Plugin:
    name = "stabcheck"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str, lines: list[str]):
        self.filename = filename
        self.lines = lines

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        from stabcheck.checks import RULES
        from stabcheck.engine import check_source
        from stabcheck.project import module_of

        codes = frozenset(code for code in RULES if code not in _FILE_ERRORS)
        try:
            package = module_of(self.filename)[1] if self.filename not in ("stdin", "-") else None
        except OSError:
            package = None
        for d in check_source("".join(self.lines), self.filename, codes, package):
            yield d.row, d.col - 1, f"{d.code} {d.message}", type(self)
