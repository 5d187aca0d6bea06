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

from stabcheck.runtime.frames import OWN_DIR, user_frame

_previous = None
_is_internal = None
_depth = 0


def _show(message, category, filename, lineno, file=None, line=None):
    if filename.startswith(OWN_DIR) and _is_internal is not None:
        frame = user_frame(sys._getframe(1), _not_users)
        if frame is not None:
            filename, lineno, line = frame.f_code.co_filename, frame.f_lineno, None
    return _previous(message, category, filename, lineno, file, line)


def _not_users(filename: str) -> bool:
    """A library's file, or the warnings module showing this warning."""
    return _is_internal(filename) or filename == warnings.__file__


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
