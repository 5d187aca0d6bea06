"""Which files to check: walk directories for `*.py`, skipping excluded
paths, virtual environments and what `.gitignore` files exclude."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import pathspec

from stabcheck.config import Settings
from stabcheck.filebytes import read_bytes

SOURCE_SUFFIXES = (".py", ".ipynb")


def bad_pattern(pattern: str) -> str | None:
    """Why a gitignore-style pattern is invalid (`\\`), or None."""
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except ValueError as exc:
        return str(exc)
    return None


class _Matcher:
    """gitignore-style patterns anchored at `root`; a pattern also matches a
    path outside `root` by its last component."""

    def __init__(self, patterns: list[str], root: Path):
        self.root = str(root)
        self.spec = pathspec.GitIgnoreSpec.from_lines(patterns)

    def match(self, abspath: str, is_dir: bool) -> bool:
        try:
            rel = os.path.relpath(abspath, self.root)
        except ValueError:  # other drive on Windows
            rel = os.path.basename(abspath)
        if rel.startswith(".."):
            rel = os.path.basename(abspath)
        if is_dir:
            rel += "/"
        return self.spec.match_file(rel)


class _GitIgnores:
    """`.gitignore` files from the repository root down to each directory."""

    def __init__(self):
        self._specs: dict[str, _Matcher | None] = {}

    def _spec(self, directory: str) -> _Matcher | None:
        if directory not in self._specs:
            try:
                lines = read_bytes(os.path.join(directory, ".gitignore")).decode("utf-8", "replace").splitlines()
            except OSError:
                lines = []
            lines = [line for line in lines if bad_pattern(line) is None]  # as git, skip what is no pattern (`\\`)
            self._specs[directory] = _Matcher(lines, Path(directory)) if lines else None
        return self._specs[directory]

    def ignored(self, abspath: str, is_dir: bool, top: str) -> bool:
        directory = os.path.dirname(abspath)
        while True:
            spec = self._spec(directory)
            if spec is not None and spec.match(abspath, is_dir):
                return True
            if directory == top or os.path.isdir(os.path.join(directory, ".git")):
                return False
            parent = os.path.dirname(directory)
            if parent == directory:
                return False
            directory = parent


def _repo_root(path: str) -> str | None:
    directory = path
    while True:
        if os.path.isdir(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


class Discovery(NamedTuple):
    files: list[str]  # to check
    missing: list[str]  # paths named on the command line that do not exist
    unreadable: list[tuple[str, str]]  # (directory, why) for directories that could not be listed


def discover(paths: list[str], settings: Settings) -> Discovery:
    """The files to check under `paths`, and what could not be looked at."""
    patterns = settings.exclude + settings.extend_exclude
    base_excluded = excluded = _Matcher(patterns, settings.root)
    gitignores = _GitIgnores() if settings.respect_gitignore else None
    files: list[str] = []
    missing: list[str] = []
    unreadable: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(display: str) -> None:
        key = os.path.abspath(display)
        if key not in seen:
            seen.add(key)
            files.append(display)

    for given in paths:
        abspath = os.path.abspath(given)
        if not os.path.lexists(given):
            missing.append(given)
            continue
        if not os.path.isdir(given):
            # A file named explicitly is checked whatever its suffix, unless
            # excluded (so pre-commit honours `exclude`).
            if not base_excluded.match(abspath, False):
                add(given)
            continue
        top = _repo_root(abspath) or abspath
        if gitignores is not None and top != abspath and gitignores.ignored(abspath, True, top):
            # The user named a directory git ignores: check it, applying only
            # the .gitignore files inside it.
            top = abspath
        excluded = base_excluded
        if excluded.match(abspath, True):
            # The user named an excluded directory (`stabcheck check fixtures/`):
            # check it, with the patterns read from inside it.
            excluded = _Matcher(patterns, Path(abspath))
        def skipped(exc: OSError) -> None:  # a directory os.walk could not list: say so, never pass silently
            unreadable.append((exc.filename or given, exc.strerror or str(exc)))

        for dirpath, dirnames, filenames in os.walk(given, onerror=skipped, followlinks=False):
            absdir = os.path.abspath(dirpath)
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(absdir, d)
                if excluded.match(full, True) or os.path.isfile(os.path.join(full, "pyvenv.cfg")):
                    continue
                if gitignores is not None and gitignores.ignored(full, True, top):
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                full = os.path.join(absdir, name)
                if excluded.match(full, False):
                    continue
                if gitignores is not None and gitignores.ignored(full, False, top):
                    continue
                add(os.path.join(dirpath, name))
    return Discovery(files, missing, unreadable)


class PerFileIgnores:
    """Codes that `per-file-ignores` switches off, by file."""

    def __init__(self, settings: Settings):
        self._rules = [(_Matcher([pattern], settings.root), codes) for pattern, codes in settings.per_file_ignores.items()]

    def codes_for(self, path: str) -> list[str]:
        if not self._rules:
            return []
        abspath = os.path.abspath(path)
        return [code for matcher, codes in self._rules if matcher.match(abspath, False) for code in codes]
