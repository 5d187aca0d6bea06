"""Reading files out of a tree that anyone can send in a pull request.

Every file stabcheck reads from the checked tree (sources, notebooks,
`.gitignore`, `pyproject.toml`, its own cache) comes through `read_bytes`:
only a regular file, and only up to `LIMIT` bytes. A FIFO named `x.py`
would block `open()` forever and a link to /dev/zero would fill memory, and
both can be committed to a repository.
"""

from __future__ import annotations

import errno
import os
import stat

LIMIT = 64 * 1024 * 1024  # larger than any source file or notebook seen in practice

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _refuse(mode: int, size: int, limit: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "special")
        raise OSError(errno.EINVAL, f"not a regular file ({kind})")
    if size > limit:
        raise OSError(errno.EFBIG, f"file too large ({size / 2**20:.0f} MiB; stabcheck reads at most {limit // 2**20} MiB)")


def read_bytes(path: str | os.PathLike, limit: int = LIMIT) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; OSError (with a
    `strerror` fit to show) for anything else."""
    info = os.stat(path)  # refuse devices before opening them: opening has effects on some
    _refuse(info.st_mode, info.st_size, limit)
    # O_NONBLOCK: had a FIFO replaced the file since the stat, open() would not wait for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        _refuse(info.st_mode, info.st_size, limit)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)  # the file may grow while we read it
    finally:
        os.close(fd)
    _refuse(stat.S_IFREG, len(data), limit)
    return data
