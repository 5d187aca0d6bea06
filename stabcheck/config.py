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
from stabcheck.filebytes import read_bytes

DEFAULT_EXCLUDE = (
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache",
    ".nox", ".pants.d", ".pytest_cache", ".pytype", ".ruff_cache", ".stabcheck_cache", ".svn", ".tox",
    ".venv", "__pypackages__", "__pycache__", "_build", "buck-out", "build", "dist", "node_modules",
    "site-packages", "venv", "*.egg-info",
)


# The default selection: every rule's default tier. ALL (or a rule's code or
# prefix) adds the opt-in shapes each rule's page lists.
DEFAULT_SELECTOR = "DEFAULT"
TIER_SELECTORS = ("ALL", DEFAULT_SELECTOR)

# Test code holds deliberate naive oracles (`np.log(np.sum(np.exp(x)))` as
# the reference for logsumexp) and tiny models: the bug rules stay out of it
# unless the configuration's own `per-file-ignores` replaces these.
TEST_FILES = ("tests/", "test/", "test_*.py", "*_test.py", "conftest.py")
BUG_RULES = ["STB0", "STB1", "STB2"]


class ConfigError(Exception):
    pass


@dataclass
class Settings:
    root: Path  # patterns are relative to this directory
    source: Path | None = None  # the pyproject.toml read, if any
    select: list[str] = field(default_factory=lambda: [DEFAULT_SELECTOR])
    ignore: list[str] = field(default_factory=list)
    extend_select: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=lambda: {p: list(BUG_RULES) for p in TEST_FILES})
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    extend_exclude: list[str] = field(default_factory=list)
    respect_gitignore: bool = True

    def enabled(self, extra_ignore: list[str] = ()) -> frozenset[str]:
        return resolve(self.select + self.extend_select, self.ignore + list(extra_ignore))

    def opt_in(self, extra_ignore: list[str] = ()) -> frozenset[str]:
        """Enabled codes whose opt-in shapes are reported too."""
        return resolve(self.select + self.extend_select, self.ignore + list(extra_ignore), opt_in=True)


_LIST_KEYS = {"select", "ignore", "extend-select", "exclude", "extend-exclude"}
_CODE_KEYS = {"select", "ignore", "extend-select"}
_PER_FILE_KEYS = {"per-file-ignores", "extend-per-file-ignores"}


def valid_selector(sel: str) -> bool:
    return sel in TIER_SELECTORS or any(code.startswith(sel) for code in RULES) and sel.startswith("STB")


def normalize(sel: str) -> str:
    """Codes are case-insensitive everywhere (options, pyproject, `# noqa`, `explain`): `stb001` is STB001."""
    return sel.strip().upper()


def resolve(select: list[str], ignore: list[str], opt_in: bool = False) -> frozenset[str]:
    """Enabled codes. The most specific matching selector wins; on a tie,
    ignore wins (`select = ["STB"]`, `ignore = ["STB1"]`, `select = ["STB102"]`
    on the command line re-enables just STB102). With `opt_in`: the enabled
    codes that a selector other than DEFAULT enables (their opt-in shapes
    are reported too)."""

    def spec(sel: str) -> int:
        return 0 if sel in TIER_SELECTORS else len(sel)

    def matches(sel: str, code: str) -> bool:
        return sel in TIER_SELECTORS or code.startswith(sel)

    out = set()
    for code in RULES:
        best_ign = max((spec(s) for s in ignore if matches(s, code)), default=-1)
        chosen = [s for s in select if matches(s, code) and spec(s) > best_ign]
        if opt_in:
            chosen = [s for s in chosen if s != DEFAULT_SELECTOR]
        if chosen:
            out.add(code)
    return frozenset(out)


def parse_selectors(text: str, what: str) -> list[str]:
    items = [normalize(s) for s in text.split(",") if s.strip()]
    for s in items:
        if not valid_selector(s):
            raise ConfigError(f"{what}: unknown rule selector {s!r} (see `stabcheck rules`)")
    return items


def read_table(path: Path) -> dict | None:
    """The [tool.stabcheck] table of a pyproject.toml, however TOML spells it
    (`[tool]` + `stabcheck.select`, `tool.stabcheck.select = ...`,
    `[tool."stabcheck"]`), or None. A file that cannot be read or is not
    valid TOML is a ConfigError, as in ruff."""
    try:
        data = read_bytes(path, 16 * 2**20)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    tool = doc.get("tool")
    if tool is not None and not isinstance(tool, dict):
        raise ConfigError(f"{path}: `tool` must be a table, got {_short(tool)}")
    table = (tool or {}).get("stabcheck")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.stabcheck] must be a table, got {_short(table)}")
    return table


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load(path: Path | None, start: Path) -> Settings:
    """Settings from `path`, or from the nearest pyproject.toml above `start`
    with a [tool.stabcheck] table."""
    if path is not None:
        return from_table(read_table(path) or {}, path)
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if os.path.lexists(candidate):  # False, not an error, for a directory we may not look into
            table = read_table(candidate)
            if table is not None:
                return from_table(table, candidate)
    return Settings(root=start)


def from_table(table: dict, path: Path) -> Settings:
    settings = Settings(root=path.parent.resolve(), source=path)
    where = f"{path}: [tool.stabcheck]"
    extra_per_file: dict[str, list[str]] = {}  # extend-per-file-ignores, kept whatever order the keys come in
    for key, value in table.items():
        if key in _LIST_KEYS:
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{where} {key} must be a list of strings, got {value!r}")
            if key in _CODE_KEYS:
                value = [normalize(sel) for sel in value]
                for sel in value:
                    if not valid_selector(sel):
                        raise ConfigError(f"{where} {key}: unknown rule selector {sel!r} (see `stabcheck rules`)")
            else:
                _check_patterns(value, f"{where} {key}")
            setattr(settings, key.replace("-", "_"), list(value))
        elif key in _PER_FILE_KEYS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where} {key} must be a table of pattern = [codes], got {value!r}")
            for pattern, codes in value.items():
                if not (isinstance(codes, list) and all(isinstance(c, str) for c in codes)):
                    raise ConfigError(f"{where} {key}.{pattern!r} must be a list of codes, got {codes!r}")
                for sel in map(normalize, codes):
                    if not valid_selector(sel):
                        raise ConfigError(f"{where} {key}.{pattern!r}: unknown rule selector {sel!r}")
            _check_patterns(list(value), f"{where} {key}")
            table = {k: [normalize(c) for c in v] for k, v in value.items()}
            if key == "per-file-ignores":  # replaces the defaults (the test-file policy)
                extended = {k: v for k, v in settings.per_file_ignores.items() if k in extra_per_file}
                settings.per_file_ignores = {**table, **extended}
            else:
                extra_per_file.update(table)
                settings.per_file_ignores.update(table)
        elif key == "respect-gitignore":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} respect-gitignore must be true or false, got {value!r}")
            settings.respect_gitignore = value
        else:
            known = ", ".join(sorted(_LIST_KEYS | _PER_FILE_KEYS | {"respect-gitignore"}))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
    return settings


def _check_patterns(patterns: list[str], where: str) -> None:
    from stabcheck.files import bad_pattern  # files.py reads Settings

    for pattern in patterns:
        problem = bad_pattern(pattern)
        if problem is not None:
            raise ConfigError(f"{where}: invalid pattern {pattern!r}: {problem}")


def common_start(paths: list[str]) -> Path:
    """Where to look for configuration: the deepest directory holding every path."""
    if not paths:
        return Path.cwd()
    resolved = [os.path.abspath(p) for p in paths]
    common = Path(os.path.commonpath(resolved))
    return common if os.path.isdir(common) else common.parent
