"""`--add-noqa` and STB903 (unused `# noqa: STB...`)."""

from __future__ import annotations

import json
from pathlib import Path

from stabcheck.checks import RULES
from stabcheck.cli import main
from stabcheck.engine import check_source

ALL = frozenset(RULES)
HEAD = "import torch\nimport torch.nn.functional as F\n"
LOG_SOFTMAX = "torch.log(F.softmax(z, -1))"


def codes(source: str, enabled=ALL) -> list[tuple[int, str]]:
    return sorted((d.row, d.code) for d in check_source(source, "m.py", enabled))


def run(capsys, *argv):
    code = main(["check", "--isolated", "--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_noqa_suppresses_every_finding_and_reports_counts(tmp_path, capsys):
    src = (
        HEAD
        + f"a = {LOG_SOFTMAX}\n"
        + f"b = {LOG_SOFTMAX}  # noqa: E501\n"
        + f"c = {LOG_SOFTMAX}  # a comment\n"
        + f"d = {LOG_SOFTMAX} + len('''\n''')\n"
        + "e = 1\r\n"
    )
    path = tmp_path / "m.py"
    path.write_bytes(src.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode())
    code, out, err = run(capsys, "--add-noqa", str(path))
    assert code == 0 and out == ""
    assert err.splitlines()[0] == "Added 3 noqa directives."
    assert "Skipped 1 finding" in err
    text = path.read_bytes().decode()
    assert "\r\n" in text and "\n" not in text.replace("\r\n", "")  # line endings kept
    lines = text.split("\r\n")
    assert lines[2] == f"a = {LOG_SOFTMAX}  # noqa: STB001"
    assert lines[3] == f"b = {LOG_SOFTMAX}  # noqa: E501, STB001"
    assert lines[4] == f"c = {LOG_SOFTMAX}  # a comment  # noqa: STB001"
    assert lines[5] == f"d = {LOG_SOFTMAX} + len('''"  # ends inside a string: left alone
    assert codes(text) == [(6, "STB001")]
    code, _, _ = run(capsys, str(path))
    assert code == 1  # the skipped finding is still reported


def test_add_noqa_merges_codes_of_one_line(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text(HEAD + "p = torch.sigmoid(z); y = torch.log(p) + torch.log(F.softmax(z, -1))\n", encoding="utf-8")
    run(capsys, "--add-noqa", str(path))
    assert path.read_text().splitlines()[-1].endswith("  # noqa: STB001, STB002")
    assert run(capsys, str(path))[0] == 0


def test_add_noqa_edits_only_the_notebook_source_line(tmp_path, capsys):
    cells = [
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": [HEAD]},
        {"cell_type": "markdown", "metadata": {}, "source": ["é notes"]},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
         "source": ["%time x = 1\n", f"y = {LOG_SOFTMAX}  # é\n", "z = 2"]},
    ]
    text = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1, ensure_ascii=False) + "\n"
    path = tmp_path / "nb.ipynb"
    path.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "--add-noqa", str(path))
    assert code == 0 and err.startswith("Added 1 noqa directive.")
    after = path.read_text(encoding="utf-8")
    changed = [(a, b) for a, b in zip(text.split("\n"), after.split("\n")) if a != b]
    assert changed == [(f'    "y = {LOG_SOFTMAX}  # é\\n",', f'    "y = {LOG_SOFTMAX}  # é  # noqa: STB001\\n",')]
    assert json.loads(after)["cells"][2]["source"][0] == "%time x = 1\n"
    assert run(capsys, str(path))[0] == 0


def test_unused_noqa_is_reported(tmp_path):
    src = HEAD + (
        "a = torch.log(x.clamp_min(1e-6))  # noqa: STB002\n"  # 3: nothing to suppress
        f"b = {LOG_SOFTMAX}  # noqa: STB001\n"  # 4: used
        f"c = {LOG_SOFTMAX}  # noqa: STB002\n"  # 5: wrong code: STB001 stays, STB903
        "d = 1  # noqa\n"  # 6: bare noqa: left alone
        "e = 1  # noqa: E501, F401\n"  # 7: other tools' codes
        "f = 1  # noqa: STB999\n"  # 8: unknown STB code
        "g = 1  # noqa: STB002, STB903\n"  # 9: kept on purpose
        "h = '# noqa: STB002'\n"  # 10: not a comment
    )
    assert codes(src) == [(3, "STB903"), (5, "STB001"), (5, "STB903"), (8, "STB903")]
    (d,) = [d for d in check_source(src, "m.py", ALL) if d.row == 3]
    assert "STB002 suppresses nothing" in d.message
    line = src.splitlines()[2]
    assert line[d.col - 1 : d.end_col - 1] == "# noqa: STB002"
    unknown = [d for d in check_source(src, "m.py", ALL) if d.row == 8][0]
    assert "unknown code STB999" in unknown.message


def test_unused_noqa_respects_selection_and_suppression():
    src = HEAD + "a = 1  # noqa: STB002\n"
    assert codes(src) == [(3, "STB903")]
    assert codes(src, ALL - {"STB903"}) == []
    assert codes(src, ALL - {"STB002"}) == []  # STB002 is off here: not known to be unused
    assert codes("# stabcheck: noqa: STB903\n" + src) == []


def test_unused_noqa_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text(HEAD + "a = 1  # noqa: STB001\n", encoding="utf-8")
    code, out, _ = run(capsys, str(path))
    assert code == 1 and ":3:8: STB903 [*] unused `noqa` directive: STB001 suppresses nothing" in out
    assert run(capsys, "--ignore", "STB903", str(path))[0] == 0


def test_add_noqa_replaces_the_file_atomically_and_skips_one_changed_meanwhile(tmp_path, capsys, monkeypatch):
    """The directives replace the file whole (a new inode, the mode kept, no temporary left behind);
    a file edited between the check and the write is left as the editor saved it."""
    import os

    from stabcheck import noqa_tools

    path = tmp_path / "m.py"
    path.write_text(HEAD + f"a = {LOG_SOFTMAX}\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    code, _, err = run(capsys, "--add-noqa", str(path))
    assert code == 0 and err.startswith("Added 1 noqa directive.")
    assert path.read_text().endswith("# noqa: STB001\n")
    assert path.stat().st_ino != inode and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["m.py"]

    other = tmp_path / "n.py"
    other.write_text(HEAD + f"b = {LOG_SOFTMAX}\n")
    plan = noqa_tools.plan

    def edited_meanwhile(source, wanted):
        other.write_text("# saved by an editor\n")
        return plan(source, wanted)

    monkeypatch.setattr(noqa_tools, "plan", edited_meanwhile)
    run(capsys, "--add-noqa", str(other))
    assert other.read_text() == "# saved by an editor\n"
