"""The flake8 plugin: `STB` findings through flake8, from the same engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from stabcheck.flake8_plugin import Plugin

BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"


def test_entry_point_is_registered():
    (ep,) = [ep for ep in entry_points(group="flake8.extension") if ep.name == "STB"]
    assert ep.load() is Plugin


def test_flake8_reports_stabcheck_findings(tmp_path):
    pytest.importorskip("flake8")
    bad = tmp_path / "bad.py"
    bad.write_text(BUG + "z = torch.log(F.softmax(torch.randn(3), -1))  # noqa: STB001\n", encoding="utf-8")
    good = tmp_path / "good.py"
    good.write_text("import torch\n\ny = torch.log_softmax(torch.randn(3), -1)\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "flake8", "--isolated", "--select", "STB", str(bad), str(good)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{bad}:4:5: STB001 log of softmax is -inf once a class probability underflows to 0; "
        "use torch.nn.functional.log_softmax"
    ]


def test_plugin_yields_flake8_tuples():
    lines = BUG.splitlines(keepends=True)
    (row, col, text, kind), = Plugin(ast.parse(BUG), "m.py", lines).run()
    assert (row, col, text.split()[0], kind) == (4, 4, "STB001", Plugin)  # flake8 columns are 0-based
