"""The README's TensorFlow/Keras sample report is exactly what `stabcheck run` prints."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tf_helpers import ROOT, env

pytest.importorskip("tensorflow")


def test_keras_sample_report_is_what_the_trap_prints():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"<!-- runtime:start -->(.*?)<!-- runtime:end -->", readme, re.S)
    assert section, "README lost its runtime section markers"
    m = re.search(r"<!-- runtime-sample-tf: (.+?) stabcheck (.+?) -->\n```text\n(.*?)```", section.group(1), re.S)
    assert m, "the runtime section lost its TensorFlow sample report"
    variables = dict(item.split("=", 1) for item in m.group(1).split())
    proc = subprocess.run([sys.executable, "-m", "stabcheck", *m.group(2).split()], cwd=ROOT, capture_output=True,
                          text=True, env=env(**variables), timeout=180)
    assert proc.returncode == 3, proc.stderr
    panel = proc.stderr[proc.stderr.index("╭─ stabcheck"):]  # TensorFlow's own start-up lines come first
    assert panel == m.group(3)
