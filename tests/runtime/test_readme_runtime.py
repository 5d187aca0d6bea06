"""The README's runtime section shows a report exactly as `stabcheck run` prints it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from runtime_helpers import ROOT, _env

pytest.importorskip("torch")


@pytest.mark.parametrize("marker", ["runtime-sample", "rerun-sample"])
def test_sample_report_is_what_the_trap_prints(marker):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- runtime:start -->(.*?)<!-- runtime:end -->", readme, re.S)
    assert section, "README lost its runtime section markers"
    m = re.search(rf"( *)<!-- {marker}: COLUMNS=(\d+) stabcheck (.+?) -->\n *```text\n(.*?)```", section.group(1), re.S)
    assert m, f"the runtime section lost its sample report ({marker})"
    indent, columns, command, sample = m.groups()
    sample = "".join(line[len(indent):] + "\n" for line in sample.splitlines() if line.strip())
    env = _env()
    env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-m", "stabcheck", *command.split()], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr == sample
