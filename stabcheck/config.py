"""`[tool.stabcheck]` in pyproject.toml, merged with command-line options.

Keys (ruff's names): select, ignore, extend-select, per-file-ignores,
exclude, extend-exclude, respect-gitignore. An unknown key, a value of the
wrong type or an unknown rule code is a ConfigError naming it (exit 2).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from stabcheck.checks import RULES

DEFAULT_EXCLUDE = (
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache",
    ".nox", ".pants.d", ".pytest_cache", ".pytype", ".ruff_cache", ".stabcheck_cache", ".svn", ".tox",
    ".venv", "__pypackages__", "__pycache__", "_build", "buck-out", "build", "dist", "node_modules",
    "site-packages", "venv", "*.egg-info",
)


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    root: Path  # patterns are relative to this directory
    source: Path | None = None  # the pyproject.toml read, if any
    select: list[str] = field(default_factory=lambda: ["ALL"])
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extend_exclude: list[str] = field(default_factory=list)
    respect_gitignore: bool = True

    def enabled(self, extra_ignore: list[str] = ()) -> frozenset[str]:
        return resolve(self.select + self.extend_select, self.ignore + list(extra_ignore))


_LIST_KEYS = {"select", "ignore", "extend-select", "exclude", "extend-exclude"}
_CODE_KEYS = {"select", "ignore", "extend-select"}


def valid_selector(sel: str) -> bool:
    return sel == "ALL" or any(code.startswith(sel) for code in RULES) and sel.startswith("STB")


def resolve(select: list[str], ignore: list[str]) -> frozenset[str]:
    """Enabled codes. The most specific matching selector wins; on a tie,
    ignore wins (`select = ["STB"]`, `ignore = ["STB1"]`, `select = ["STB102"]`
    on the command line re-enables just STB102)."""

    def spec(sel: str) -> int:
        return 0 if sel == "ALL" else len(sel)

    out = set()
    for code in RULES:
        best_sel = max((spec(s) for s in select if s == "ALL" or code.startswith(s)), default=-1)
        best_ign = max((spec(s) for s in ignore if s == "ALL" or code.startswith(s)), default=-1)
        if best_sel >= 0 and best_sel > best_ign:
            out.add(code)
    return frozenset(out)


def parse_selectors(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    for s in items:
        if not valid_selector(s):
            raise ConfigError(f"{what}: unknown rule selector {s!r} (see `stabcheck rules`)")
    return items


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a [tool.stabcheck] table, upward from `start`."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if "[tool.stabcheck" in text:
                return candidate
    return None


def load(path: Path | None, start: Path) -> Settings:
    """Settings from `path`, or from the nearest pyproject.toml above `start`."""
    if path is None:
        path = find_pyproject(start)
        if path is None:
            return Settings(root=start)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    table = data.get("tool", {}).get("stabcheck", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.stabcheck] must be a table")
    return from_table(table, path)


def from_table(table: dict, path: Path) -> Settings:
    settings = Settings(root=path.parent.resolve(), source=path)
    where = f"{path}: [tool.stabcheck]"
    for key, value in table.items():
        if key in _LIST_KEYS:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{where} {key} must be a list of strings, got {value!r}")
            if key in _CODE_KEYS:
                for sel in value:
                    if not valid_selector(sel):
                        raise ConfigError(f"{where} {key}: unknown rule selector {sel!r} (see `stabcheck rules`)")
            setattr(settings, key.replace("-", "_"), list(value))
        elif key == "per-file-ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{where} per-file-ignores must be a table of pattern = [codes], got {value!r}")
            for pattern, codes in value.items():
                if not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
                    raise ConfigError(f"{where} per-file-ignores.{pattern!r} must be a list of codes, got {codes!r}")
                for sel in codes:
                    if not valid_selector(sel):
                        raise ConfigError(f"{where} per-file-ignores.{pattern!r}: unknown rule selector {sel!r}")
            settings.per_file_ignores = {k: list(v) for k, v in value.items()}
        elif key == "respect-gitignore":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} respect-gitignore must be true or false, got {value!r}")
            settings.respect_gitignore = value
        else:
            known = ", ".join(sorted(_LIST_KEYS | {"per-file-ignores", "respect-gitignore"}))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
    return settings


def common_start(paths: list[str]) -> Path:
    """Where to look for configuration: the deepest directory holding every path."""
    if not paths:
        return Path.cwd()
    resolved = [os.path.abspath(p) for p in paths]
    common = Path(os.path.commonpath(resolved))
    return common if common.is_dir() else common.parent
