"""Warnings that a library issues from C++ name the user's line, as under plain python.

CPython attributes a warning raised in C (`std(): degrees of freedom is <= 0`,
TORCH_WARN in general) to the innermost Python frame. Under the trap, ops the
user's code calls may run inside one of the trap's handlers (a torch function
or dispatch mode), so that frame is stabcheck's. While a trap is installed,
`warnings.showwarning` moves such a warning to the first frame outside
stabcheck and the libraries before it is shown. (A filter's once-per-location
memory still counts the trap's line: the same warning from two user lines may
show once.)
"""

from __future__ import annotations

import sys
import warnings

from stabcheck.runtime.frames import OWN_DIR

_previous = None
_is_internal = None
_depth = 0


def _show(message, category, filename, lineno, file=None, line=None):
    if filename.startswith(OWN_DIR) and _is_internal is not None:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if not name.startswith(OWN_DIR) and not _is_internal(name) and name != warnings.__file__:
                filename, lineno, line = name, frame.f_lineno, None
                break
            frame = frame.f_back
    return _previous(message, category, filename, lineno, file, line)


def install(is_internal) -> None:
    """Nested installs (torch and TensorFlow adapters in one run) share one hook."""
    global _previous, _is_internal, _depth
    _depth += 1
    if _depth == 1:
        _previous, _is_internal = warnings.showwarning, is_internal
        warnings.showwarning = _show


def uninstall() -> None:
    global _previous, _is_internal, _depth
    _depth = max(0, _depth - 1)
    if _depth == 0 and _previous is not None:
        if warnings.showwarning is _show:  # someone replaced it after us: leave theirs
            warnings.showwarning = _previous
        _previous = _is_internal = None
