"""Write a fixed file back without ever leaving it half-written or mixed.

The new content goes to a temporary file in the same directory, is fsynced,
and replaces the file with `os.replace` (a reader sees the old file or the
new one; a full disk or a kill leaves the old one). Under an exclusive lock
on the file, the content is re-read and compared with the bytes the fixes
were computed on: a file that changed meanwhile (another `--fix`, an editor)
is skipped. The mode is kept; a file that resolves outside the checked tree
(through a symlink) is never written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the content check still applies
    fcntl = None


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def inside(path: str, roots: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def replace_if_unchanged(path: str, data: bytes, expected: str, roots: list[str] | None = None) -> str | None:
    """Write `data` to `path` if it still hashes to `expected`; the reason
    when it was not written, else None."""
    real = os.path.realpath(path)
    if roots is not None and not inside(path, roots):
        return "it resolves (through a symlink) outside the checked tree; not written"
    try:
        with _locked(real) as current:
            if digest(current) != expected:
                return "it changed since it was checked; not written"
            _replace(real, data)
    except OSError as exc:
        return f"cannot write it: {exc.strerror or exc}; left as it was"
    return None


class _locked:
    """Exclusive lock on the file at `path` (re-taken if the file was
    replaced while waiting); yields its current bytes."""

    def __init__(self, path: str):
        self.path = path
        self.fh = None

    def __enter__(self) -> bytes:
        while True:
            self.fh = open(self.path, "rb")
            if fcntl is None:
                break
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
            try:
                same = os.fstat(self.fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            self.fh.close()  # replaced while we waited: lock the new file
        return self.fh.read()

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _replace(real: str, data: bytes) -> None:
    directory, name = os.path.split(real)
    mode = stat.S_IMODE(os.stat(real).st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".stabcheck-tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
