"""The user's line: frame walks and traceback parsing shared by the framework adapters.

Each adapter decides which files are library code (its `is_internal`); what a
"user frame" is, and how an anomaly-mode traceback is read, is decided here once.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import sysconfig

import stabcheck
from stabcheck.runtime.report import Location

OWN_DIR = os.path.dirname(stabcheck.__file__) + os.sep
SKIP_FILES = ("contextlib.py", "functools.py")

LIBRARY_DIRS = tuple(dict.fromkeys(
    os.path.join(p, "") for p in (sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib"))
    if p))


def is_library(filename: str) -> bool:
    """Installed or standard-library code, or stabcheck's own: not the user's script."""
    return filename.startswith((*LIBRARY_DIRS, OWN_DIR)) or filename.startswith("<")


def package_dir(name: str) -> str | None:
    """Directory of an installed package, without importing it (Keras/TF load only if the user's code does)."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", None):
        return os.path.dirname(module.__file__) + os.sep
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return os.path.join(list(spec.submodule_search_locations)[0], "")
    return os.path.dirname(spec.origin) + os.sep if spec.origin else None


def user_frame(frame, is_internal, stop_at_own: bool = False, pass_through=frozenset()):
    """First frame, from `frame` outwards, outside the libraries and outside stabcheck.

    With stop_at_own, reaching stabcheck's own code first means "no user frame
    in between" (a replayed built-in module) and returns None; the code objects
    in `pass_through` (stabcheck's wrappers of library calls, such as
    Module.__call__, which sit between a library op and the user's forward)
    do not count as that.
    """
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(OWN_DIR):
            if stop_at_own and frame.f_code not in pass_through:
                return None
        elif not is_internal(name):
            return frame
        frame = frame.f_back
    return None


def where_of(frame) -> tuple[str, int, str] | None:
    """(filename, line, function) of a frame: cheap to keep, a Location only when reported."""
    return (frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name) if frame is not None else None


def location(where) -> Location | None:
    """A Location from a frame or a (filename, line, function) tuple."""
    if where is None:
        return None
    if isinstance(where, tuple):
        return Location(*where)
    return Location(where.f_code.co_filename, where.f_lineno, where.f_code.co_name)


_TB_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>[^\n]+)')


def loc_from_traceback(lines, is_internal) -> tuple[Location | None, bool]:
    """Innermost user frame of a formatted traceback; (loc, hit_own_code_first)."""
    frames = _TB_LINE.findall("".join(lines or ()))
    for filename, line, func in reversed(frames):
        if filename.startswith(OWN_DIR):
            return None, True
        if not is_internal(filename):
            return Location(filename, int(line), func.strip()), False
    return None, False
