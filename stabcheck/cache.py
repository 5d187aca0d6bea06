"""Per-file results cached by content, in `.stabcheck_cache/`.

An entry's key hashes the file's bytes, its suffix, and every field of its
`FileJob` except the path (the enabled codes and whatever else decides the
result); the cache file's name hashes stabcheck's version and its own source
code, so a changed rule never serves old results. Findings with any code are
stored (a warm rerun of a file with findings is as cheap as a clean one),
except internal and read errors, which may not happen next time.

One JSON file per stabcheck build, rewritten through a temporary file and
`os.replace`: a reader sees the old file or the new one, never half of one.
Two runs at once may each drop the other's new entries (the next run adds
them back) but never corrupt or mix them up. The directory carries a
`CACHEDIR.TAG` and a `.gitignore` of `*`, as ruff's does.

The cache directory comes with the checked tree, so it is treated as
hostile: stabcheck writes to and cleans only a real directory (not a link)
that it created and tagged, deletes only files named as it names them,
reads every file through `filebytes.read_bytes`, and treats an entry of the
wrong shape as a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from pathlib import Path

from stabcheck import __version__
from stabcheck.diagnostics import Diagnostic
from stabcheck.filebytes import read_bytes

DIRNAME = ".stabcheck_cache"
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by stabcheck.\n"
_MAX_AGE = 30 * 24 * 3600  # entries (and other builds' files) unused for this long are dropped
_UNCACHED = frozenset({"STB900", "STB902"})  # internal and read errors: may not repeat
_FIELDS = [f.name for f in dataclasses.fields(Diagnostic) if f.name != "path"]
_OURS = re.compile(r"(results-[0-9a-f]{20}\.json|\.results-\w+\.tmp)\Z")  # the only names we delete


def _stable(value):
    """A JSON-able form of a FileJob field that is the same in every process."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_stable(getattr(value, f.name)) for f in dataclasses.fields(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((_stable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if isinstance(value, dict):
        return sorted(([_stable(k), _stable(v)] for k, v in value.items()), key=repr)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _build_id() -> str:
    """stabcheck's version and a hash of its source: a new rule means a new cache."""
    package = Path(__file__).resolve().parent
    digest = hashlib.blake2b(__version__.encode(), digest_size=16)
    for path in sorted(package.rglob("*.py")):
        if "runtime" in path.relative_to(package).parts:
            continue
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_dir(settings) -> Path:
    """Next to the pyproject.toml in use, else in the working directory."""
    root = settings.source.parent if getattr(settings, "source", None) is not None else Path.cwd()
    return Path(root) / DIRNAME


class Cache:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.file = self.directory / f"results-{_build_id()[:20]}.json"
        self._entries: dict[str, dict] = {}
        self._digests: dict[str, str | None] = {}
        self._dirty = False
        if not self._ours():
            return
        try:
            data = json.loads(read_bytes(self.file))
        except (OSError, ValueError, RecursionError):
            return
        if isinstance(data, dict):
            self._entries = data

    def _ours(self) -> bool:
        """The directory is a real one (not a link) carrying the tag stabcheck writes."""
        try:
            if not stat.S_ISDIR(os.lstat(self.directory).st_mode):
                return False
            return read_bytes(self.directory / "CACHEDIR.TAG", 4096).decode("utf-8", "replace") == _TAG
        except OSError:
            return False

    # -- keys ---------------------------------------------------------------

    @staticmethod
    def _hash_file(path: str) -> str | None:
        try:
            return hashlib.blake2b(read_bytes(path), digest_size=20).hexdigest()
        except OSError:
            return None

    def _digest(self, path: str) -> str | None:
        if path not in self._digests:
            self._digests[path] = self._hash_file(path)
        return self._digests[path]

    def _unchanged(self, path: str) -> bool:
        """The file still has the content it was keyed by."""
        return self._digests.get(path) is not None and self._hash_file(path) == self._digests[path]

    @staticmethod
    def key(job, digest: str) -> str:
        """Results key: the content digest and every job field but the path."""
        fields = {f.name: _stable(getattr(job, f.name)) for f in dataclasses.fields(job) if f.name != "path"}
        head = json.dumps(["r", os.path.splitext(job.path)[1].lower(), fields, digest], sort_keys=True)
        return hashlib.blake2b(head.encode(), digest_size=20).hexdigest()

    def _summary_key(self, path: str) -> str | None:
        from stabcheck.project import module_of

        digest = self._digest(path)
        if digest is None:
            return None
        head = json.dumps(["s", os.path.splitext(path)[1].lower(), module_of(path), digest])
        return hashlib.blake2b(head.encode(), digest_size=20).hexdigest()

    # -- entries ------------------------------------------------------------

    def _get(self, key: str | None):
        entry = self._entries.get(key) if key is not None else None
        if not _is_entry(entry):
            return None
        if time.time() - entry["t"] > 24 * 3600:  # refresh the timestamp at most daily
            entry["t"] = int(time.time())
            self._dirty = True
        return entry

    def _put(self, key: str, value) -> None:
        self._entries[key] = {"t": int(time.time()), "v": value}
        self._dirty = True

    # -- hooks for engine.check_jobs ------------------------------------------

    def summaries(self, map_fn):
        """Wrap the `map` that phase one runs `project.summarize` with."""

        def cached_map(fn, paths):
            paths = list(paths)
            keys = [self._summary_key(p) for p in paths]
            known = {}
            for path, key in zip(paths, keys):
                entry = self._get(key)
                if entry is not None and _is_summary(entry["v"]):
                    known[path] = _summary_from_json(entry["v"])
            todo = [p for p in paths if p not in known]
            computed = dict(zip(todo, map_fn(fn, todo)))
            for path, key in zip(paths, keys):
                if path in computed:
                    value = computed[path]
                    if key is not None and self._unchanged(path):
                        self._put(key, value)
                    yield value
                else:
                    yield known[path]

        return cached_map

    def lookup(self, jobs: list) -> tuple[list[Diagnostic], list]:
        """(cached findings, jobs still to check)."""
        hits: list[Diagnostic] = []
        misses = []
        for job in jobs:
            digest = self._digest(job.path)
            entry = self._get(self.key(job, digest)) if digest is not None else None
            found = _diagnostics_from_json(job.path, entry["v"]) if entry is not None else None
            if found is None:
                misses.append(job)
            else:
                hits.extend(found)
        return hits, misses

    def store(self, jobs: list, diags: list[Diagnostic]) -> None:
        """Remember the findings of `jobs` (just checked), then save."""
        by_path: dict[str, list[Diagnostic]] = {}
        for d in diags:
            by_path.setdefault(d.path, []).append(d)
        for job in jobs:
            found = by_path.get(job.path, [])
            if self._unchanged(job.path) and not any(d.code in _UNCACHED for d in found):
                self._put(self.key(job, self._digests[job.path]), [[getattr(d, f) for f in _FIELDS] for d in found])
        self.save()

    # -- the file -----------------------------------------------------------

    def save(self) -> None:
        if not self._dirty:
            return
        now = time.time()
        entries = {k: v for k, v in self._entries.items() if _is_entry(v) and now - v["t"] <= _MAX_AGE}
        try:
            self._prepare()
            fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(entries, fh, separators=(",", ":"))
                os.replace(tmp, self.file)
            except BaseException:
                with _quiet():
                    os.unlink(tmp)
                raise
            self._dirty = False
            self._drop_stale(now)
        except OSError:
            pass  # a read-only checkout: run without a cache

    def _prepare(self) -> None:
        """Create and tag the directory, or check that it is ours (OSError if not)."""
        try:
            self.directory.mkdir()
        except FileExistsError:
            if not self._ours():
                raise OSError(f"{self.directory} was not created by stabcheck: not using it") from None
            return
        for name, text in (("CACHEDIR.TAG", _TAG), (".gitignore", "# Created by stabcheck.\n*\n")):
            (self.directory / name).write_text(text, encoding="utf-8")

    def _drop_stale(self, now: float) -> None:
        for entry in os.scandir(self.directory):
            with _quiet():
                if not _OURS.match(entry.name) or entry.path == str(self.file):
                    continue
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and now - info.st_mtime > (_MAX_AGE if entry.name.endswith(".json") else 3600):
                    os.unlink(entry.path)


def _is_entry(entry) -> bool:
    return isinstance(entry, dict) and "v" in entry and type(entry.get("t")) in (int, float)


def _is_summary(value) -> bool:
    """Of the shape `project.summarize` returns: None or [module, {name: [kind, source]}]."""
    if value is None:
        return True
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict)):
        return False
    return all(isinstance(e, list) and len(e) == 2 and all(isinstance(s, str) for s in e) for e in value[1].values())


def _diagnostics_from_json(path: str, items) -> list[Diagnostic] | None:
    """A results entry read back, or None when it is not of the shape `store` writes."""
    if not isinstance(items, list):
        return None
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == len(_FIELDS)):
            return None
        fields = dict(zip(_FIELDS, item))
        if not (isinstance(fields["code"], str) and isinstance(fields["message"], str)
                and all(type(fields[k]) is int for k in ("row", "col", "end_row", "end_col"))
                and (fields["cell"] is None or type(fields["cell"]) is int)):
            return None
        try:
            d = Diagnostic(path=path, **fields)
            if d.fix is not None and not _valid_fix(d.fix):
                return None
        except (TypeError, ValueError):
            return None
        out.append(d)
    return out


def _valid_fix(fix) -> bool:
    """A fix read back has the types `fixes.Fix` holds (it is recomputed before
    anything is written; this keeps a malformed entry from crashing a report)."""
    def strings(items) -> bool:
        return all(isinstance(i, str) for i in items)

    return isinstance(fix.title, str) and isinstance(fix.applicability, str) and strings(fix.imports) and all(
        isinstance(op.kind, str) and strings(op.params)
        and all(all(type(v) is int for v in span) for span in op.spans)
        for op in fix.ops
    )


def _summary_from_json(value):
    """Phase-one summaries are tuples; JSON gives lists back (and the
    summaries' fingerprint, part of every results key, must not change)."""
    if isinstance(value, list):
        return tuple(_summary_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _summary_from_json(v) for k, v in value.items()}
    return value


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, OSError)
