"""The rule catalog: one Markdown page per rule, `STBnnn-slug.md`.

In a checkout the pages live in the top-level `rules/`; an installed wheel
carries them as `stabcheck/_catalog/`.
"""

from __future__ import annotations

import re
from pathlib import Path

_PAGE = re.compile(r"^(STB\d{3})-([a-z0-9-]+)\.md$")


def catalog_dir() -> Path | None:
    package = Path(__file__).resolve().parent
    for candidate in (package / "_catalog", package.parent / "rules"):
        if candidate.is_dir():
            return candidate
    return None


def pages() -> dict[str, Path]:
    """Catalog pages by rule code."""
    directory = catalog_dir()
    if directory is None:
        return {}
    out = {}
    for path in sorted(directory.iterdir()):
        m = _PAGE.match(path.name)
        if m:
            out[m.group(1)] = path
    return out


def slug_of(path: Path) -> str:
    m = _PAGE.match(path.name)
    return m.group(2) if m else ""
