"""`# noqa` comments: per line (`# noqa`, `# noqa: STB001, STB002`) and per
file (`# stabcheck: noqa`, `# stabcheck: noqa: STB002`), as ruff spells them.
Codes are case-insensitive, as on the command line (`# noqa: stb001`)."""

from __future__ import annotations

import re

_CODES = r"[A-Za-z]+[0-9]+(?:[,\s]+[A-Za-z]+[0-9]+)*"
_LINE = re.compile(rf"#\s*(?i:noqa)(?::\s?(?P<codes>{_CODES}))?")
_FILE = re.compile(rf"^[ \t]*#\s*stabcheck:\s*(?i:noqa)(?::\s?(?P<codes>{_CODES}))?[ \t]*$", re.M)
_SPLIT = re.compile(r"[,\s]+")
_ALL = frozenset({"*"})


def _codes(text: str | None) -> frozenset[str]:
    return frozenset(_SPLIT.split(text.strip().upper())) if text else _ALL


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


def _comments(source: str):
    """(row, col0, text) of each real comment: not text inside a string."""
    import io
    import tokenize

    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.start[0], tok.start[1], tok.string
    except (tokenize.TokenError, SyntaxError):
        return


def unused_noqa(source: str, fired: set[tuple[str, int]], codes: frozenset[str], path: str) -> list:
    """STB903: `# noqa: STB...` codes that suppress nothing on their line.

    `fired` holds (code, row) of every finding before suppression. Only STB
    codes are judged (other tools' codes are theirs), only for rules enabled
    on this file (a code switched off by configuration is not known to be
    unused), and a bare `# noqa` is left alone, as ruff does. Unknown STB codes
    are reported too."""
    from stabcheck.checks import RULES, UNUSED_NOQA
    from stabcheck.diagnostics import Diagnostic

    if UNUSED_NOQA.code not in codes or "noqa" not in source.lower():
        return []
    suppressions = Suppressions(source)
    out = []
    for row, col0, comment in _comments(source):
        for m in _LINE.finditer(comment):
            if not m.group("codes"):
                continue
            listed = [c for c in _SPLIT.split(m.group("codes").strip().upper()) if c.startswith("STB") and c != UNUSED_NOQA.code]
            unused = [c for c in listed if c in RULES and c in codes and (c, row) not in fired]
            unknown = [c for c in listed if c not in RULES]
            if not (unused or unknown) or suppressions.suppressed(UNUSED_NOQA.code, row):
                continue
            parts = []
            if unused:
                parts.append(f"{', '.join(unused)} suppress{'es' * (len(unused) == 1)} nothing on this line")
            if unknown:
                parts.append(f"unknown code{'s' * (len(unknown) > 1)} {', '.join(unknown)}")
            message = f"unused `noqa` directive: {'; '.join(parts)}; remove {'it' if len(unused) + len(unknown) == 1 else 'them'}"
            start, end = col0 + m.start() + 1, col0 + m.end() + 1
            fix = _noqa_fix(row, col0, comment, m, set(unused) | set(unknown))
            out.append(Diagnostic(UNUSED_NOQA.code, message, path, row, start, row, end, fix=fix))
    return out


def _noqa_fix(row: int, col0: int, comment: str, m: re.Match, drop: set[str]):
    """Remove the unused codes from the directive, or the directive (and the
    comment, when nothing else is in it) once none is left, as ruff's RUF100."""
    from stabcheck.fixes import SAFE, Fix, Op

    if len(_LINE.findall(comment)) != 1:
        return None
    codes = _SPLIT.split(m.group("codes").strip())
    keep = [c for c in codes if c not in drop]
    if keep:
        new = comment[: m.start("codes")] + ", ".join(keep) + comment[m.end("codes"):]
    else:
        new = (comment[: m.start()].rstrip() + " " + comment[m.end():].strip()).strip()
        if new and not new.startswith("#"):
            new = "# " + new
        if new.strip("# ") == "":
            new = ""
    span = (row, col0, row, col0 + len(comment))
    return Fix("Remove unused noqa directive", SAFE, (Op("noqa", (span,), (comment, new)),))
