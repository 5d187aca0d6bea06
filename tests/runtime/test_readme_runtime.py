"""The README's runtime section shows a report exactly as `stabcheck run` prints it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from runtime_helpers import ROOT, _env

pytest.importorskip("torch")


def test_sample_report_is_what_the_trap_prints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- runtime:start -->(.*?)<!-- runtime:end -->", readme, re.S)
    assert section, "README lost its runtime section markers"
    m = re.search(r"<!-- runtime-sample: COLUMNS=(\d+) stabcheck (.+?) -->\n```text\n(.*?)```", section.group(1), re.S)
    assert m, "the runtime section lost its sample report"
    env = _env()
    env["COLUMNS"] = m.group(1)
    proc = subprocess.run([sys.executable, "-m", "stabcheck", *m.group(2).split()], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr == m.group(3)
