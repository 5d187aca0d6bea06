"""The precision gate on a corpus every machine has: the standard library.

It must lint with no crash (no STB900) and no finding of the bug rules:
none of it is training code, so anything reported would be a false alarm.
"""

from __future__ import annotations

import sysconfig
from collections import Counter

from stabcheck.checks import RULES
from stabcheck.config import Settings
from stabcheck.engine import FileJob, check_jobs
from stabcheck.files import discover
from pathlib import Path


def test_standard_library_is_clean():
    stdlib = sysconfig.get_paths()["stdlib"]
    files, missing, _ = discover([stdlib], Settings(root=Path(stdlib)))
    assert not missing and len(files) > 500
    diags = check_jobs([FileJob(f, frozenset(RULES)) for f in files])
    counts = Counter(d.code for d in diags)
    assert set(counts) <= {"STB901"}, [(d.path, d.row, d.code, d.message) for d in diags if d.code != "STB901"]
    # The stdlib's deliberately undecodable test files.
    assert all("test" in d.path for d in diags)
