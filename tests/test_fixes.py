"""Autofix: goldens in fixtures/fixes (`X.py` -> `X.fixed.py`), safety levels,
--diff, and the JSON shape of a fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stabcheck.cli import main
from stabcheck.engine import FileJob, check_file
from stabcheck.checks import RULES

FIXES = Path(__file__).resolve().parent.parent / "fixtures" / "fixes"
GOLDENS = sorted(p for p in FIXES.glob("*.py") if not p.name.endswith(".fixed.py"))


def run(capsys, *argv):
    code = main(["check", "--isolated", "--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda p: p.stem)
def test_fix_matches_golden_and_relints_clean(golden, tmp_path, capsys):
    target = tmp_path / golden.name
    shutil.copy(golden, target)
    codes = set(golden.stem.split("_"))
    before = {d.code for d in check_file(FileJob(str(target), frozenset(RULES)))}
    assert codes <= before, f"the golden no longer exercises {codes - before}"
    code, out, _ = run(capsys, "--fix", "--unsafe-fixes", str(target))
    assert target.read_text() == golden.with_name(golden.stem + ".fixed.py").read_text()
    left = [d for d in check_file(FileJob(str(target), frozenset(RULES))) if d.code in codes or d.code == "STB901"]
    assert not left, left
    assert code == 0 and "All checks passed!" in out


def test_unsafe_fixes_need_the_flag(tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text(
        "import torch.nn.functional as F\n\n"
        "def f(x, y):\n    return F.cross_entropy(F.softmax(x, dim=1), y)\n"
    )
    code, out, _ = run(capsys, str(target))
    assert "STB101 " in out and "[*]" not in out
    assert "1 fix available with --fix --unsafe-fixes." in out
    code, out, _ = run(capsys, "--fix", str(target))
    assert code == 1 and "F.softmax" in target.read_text()
    code, out, _ = run(capsys, "--fix", "--unsafe-fixes", str(target))
    assert code == 0 and "F.cross_entropy(x, y)" in target.read_text()


def test_diff_prints_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = "import torch\nimport torch.nn.functional as F\n\nz = torch.log(F.softmax(torch.randn(3), -1))\n"
    Path("m.py").write_text(src)
    code, out, err = run(capsys, "--diff", "m.py")
    assert code == 1
    assert "-z = torch.log(F.softmax(torch.randn(3), -1))" in out
    assert "+z = F.log_softmax(torch.randn(3), -1)" in out
    assert out.startswith("--- a/m.py\n+++ b/m.py\n")
    assert Path("m.py").read_text() == src
    assert "Would fix 1 problem" in err


def test_fix_keeps_line_endings_and_encoding(tmp_path, capsys):
    target = tmp_path / "crlf.py"
    target.write_bytes(
        "# -*- coding: latin-1 -*-\r\nimport torch\r\nimport torch.nn.functional as F\r\n"
        "s = 'é'\r\nz = torch.log(F.softmax(torch.randn(3), -1))\r\n".encode("latin-1")
    )
    run(capsys, "--fix", str(target))
    assert target.read_bytes().endswith(b"s = '\xe9'\r\nz = F.log_softmax(torch.randn(3), -1)\r\n")


def test_json_fix_shape(tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text("import torch\n\ndef f(v):\n    return torch.sqrt(torch.exp(v))\n")
    _, out, _ = run(capsys, "--output-format", "json", str(target))
    (item,) = json.loads(out)
    assert item["fix"] == {
        "applicability": "safe",
        "message": "Use exp(0.5 * x)",
        "edits": [{"content": "torch.exp(0.5 * v)", "location": {"row": 4, "column": 12},
                   "end_location": {"row": 4, "column": 36}}],
    }


def test_fix_in_a_notebook_edits_only_that_cell_line(tmp_path, capsys):
    source = Path(__file__).resolve().parent.parent / "fixtures" / "notebooks" / "classifier.ipynb"
    target = tmp_path / "nb.ipynb"
    shutil.copy(source, target)
    _, out, _ = run(capsys, "--output-format", "json", str(target))
    (stb001,) = [d for d in json.loads(out) if d["code"] == "STB001"]
    (edit,) = stb001["fix"]["edits"]
    assert edit["cell"] == stb001["cell"] and edit["location"]["row"] == stb001["location"]["row"]
    before = target.read_text().splitlines()
    code, out, _ = run(capsys, "--fix", str(target))
    after = target.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert "F.log_softmax(z, -1)" in changed[0][1]
    json.loads(target.read_text())
    assert "STB001" not in out
