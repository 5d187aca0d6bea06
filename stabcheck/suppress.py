"""`# noqa` comments: per line (`# noqa`, `# noqa: STB001, STB002`) and per
file (`# stabcheck: noqa`, `# stabcheck: noqa: STB002`), as ruff spells them."""

from __future__ import annotations

import re

_CODES = r"[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*"
_LINE = re.compile(rf"#\s*(?i:noqa)(?::\s?(?P<codes>{_CODES}))?")
_FILE = re.compile(rf"^[ \t]*#\s*stabcheck:\s*(?i:noqa)(?::\s?(?P<codes>{_CODES}))?[ \t]*$", re.M)
_SPLIT = re.compile(r"[,\s]+")
_ALL = frozenset({"*"})


def _codes(text: str | None) -> frozenset[str]:
    return frozenset(_SPLIT.split(text.strip())) if text else _ALL


class Suppressions:
    def __init__(self, source: str):
        self._source = source
        self._lines: list[str] | None = None
        self._file: frozenset[str] = frozenset()
        for m in _FILE.finditer(source):
            self._file |= _codes(m.group("codes"))

    def suppressed(self, code: str, row: int) -> bool:
        if self._file and ("*" in self._file or code in self._file):
            return True
        if "#" not in self._source:
            return False
        if self._lines is None:
            self._lines = re.split(r"\r\n|\r|\n", self._source)
        if not 0 < row <= len(self._lines):
            return False
        line = self._lines[row - 1]
        if "#" not in line:
            return False
        for m in _LINE.finditer(line):
            codes = _codes(m.group("codes"))
            if "*" in codes or code in codes:
                return True
        return False
