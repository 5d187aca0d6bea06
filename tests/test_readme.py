"""The README is the front door: its sample output and rule table stay true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stabcheck.checks import RULES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_sample_output_is_what_the_command_prints():
    m = re.search(r"<!-- sample-output: stabcheck (.+?) -->\n```text\n(.*?)```", README, re.S)
    assert m, "README lost its sample-output block"
    argv = m.group(1).split()
    proc = subprocess.run([sys.executable, "-m", "stabcheck", *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout == m.group(2)
    assert proc.returncode == 1


def test_rule_table_lists_the_registry():
    rows = re.findall(r"^\| (STB\d{3}) \| ([a-z0-9-]+) \|", README, re.M)
    assert rows == [(code, rule.slug) for code, rule in RULES.items()]


def test_ci_runs_the_readme_test_command():
    command = 'pip install torch==2.13.0 tensorflow-cpu "jax[cpu]==0.10.2" -e ".[test]" && python -m pytest'
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
