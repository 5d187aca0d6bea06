"""What a new user meets first: usage, version, help, statistics, standard
input, --output-file, the full format, safe file names, the pytest hint."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from stabcheck import __version__
from stabcheck.cli import main

BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"  # 4:5 STB001
SIGMOID_BUG = "import torch\n\np = torch.sigmoid(torch.randn(3))\nz = torch.log(p)\n"  # 4:5 STB002


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unknown_check_option_shows_the_usage_of_check(capsys):
    code, out, err = run(capsys, "check", "--frobnicate")
    assert code == 2 and out == ""
    assert err.startswith("usage: stabcheck check ") and err.endswith("error: unrecognized arguments: --frobnicate\n")
    code, _, err = run(capsys, "--frobnicate")
    assert code == 2 and err.startswith("usage: stabcheck [-h]")


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(capsys, flag):
    assert run(capsys, flag) == (0, f"stabcheck {__version__}\n", "")


def test_check_help_describes_the_command_and_its_exit_statuses(capsys):
    code, out, _ = run(capsys, "check", "--help")
    assert code == 0
    assert "Lint Python files and Jupyter notebooks" in out
    assert "exit status:\n  0  no findings" in out and "\n  1  findings were reported" in out
    assert "\n  2  usage or configuration error" in out


def test_statistics_in_json_and_refused_where_undefined(tmp_path, capsys):
    (tmp_path / "a.py").write_text(BUG + SIGMOID_BUG.replace("import torch\n", ""), encoding="utf-8")
    (tmp_path / "b.py").write_text(SIGMOID_BUG, encoding="utf-8")
    code, out, _ = run(capsys, "check", "--isolated", "--no-cache", "--statistics", "--output-format", "json", str(tmp_path))
    assert code == 1
    assert json.loads(out) == [
        {"code": "STB002", "name": "unguarded-log-of-probability", "count": 2, "fixable": 0},
        {"code": "STB001", "name": "log-of-softmax", "count": 1, "fixable": 1},
    ]
    code, out, err = run(capsys, "check", "--isolated", "--statistics", "--output-format", "sarif", str(tmp_path))
    assert (code, out) == (2, "") and "--statistics prints text or json" in err


def test_add_noqa_with_diff_is_refused_and_writes_nothing(tmp_path, capsys):
    f = tmp_path / "a.py"
    f.write_text(BUG, encoding="utf-8")
    code, out, err = run(capsys, "check", "--isolated", "--add-noqa", "--diff", str(f))
    assert code == 2 and "--add-noqa cannot be combined with --fix or --diff" in err
    assert f.read_text(encoding="utf-8") == BUG


def test_control_characters_in_file_names_are_escaped(tmp_path, capsys, monkeypatch):
    name = "red\x1b[31m\u202eyp.py"
    (tmp_path / name).write_text(BUG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for fmt in ("text", "full"):
        code, out, _ = run(capsys, "check", "--isolated", "--no-cache", "--output-format", fmt, ".")
        assert code == 1
        assert out.startswith("red\\x1b[31m\\u202eyp.py:4:5: STB001 ")
        assert "\x1b" not in out and "\u202e" not in out


def stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))


def test_stdin_is_checked_under_its_given_name(tmp_path, capsys, monkeypatch):
    # On disk the file is clean: the report (lines, fixes) is of what came in.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n", encoding="utf-8")
    (tmp_path / "pyproject.toml").write_text('[tool.stabcheck]\nper-file-ignores = { "pkg/*" = ["STB002"] }\n',
                                            encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    stdin(monkeypatch, BUG + SIGMOID_BUG.replace("import torch\n", ""))
    code, out, _ = run(capsys, "check", "--no-cache", "--output-format", "json", "--stdin-filename", "pkg/m.py", "-")
    assert code == 1
    (d,) = json.loads(out)  # STB002 is ignored for pkg/* by the pyproject.toml found from the name
    assert (d["code"], d["filename"], d["location"]["row"]) == ("STB001", str(tmp_path / "pkg" / "m.py"), 4)
    assert d["fix"]["edits"][0]["location"] == {"row": 4, "column": 5}
    stdin(monkeypatch, BUG)
    code, out, _ = run(capsys, "check", "--isolated", "--output-format", "full", "-")
    assert code == 1 and out.startswith("-:4:5: STB001 ")
    assert "4 | y = torch.log(F.softmax(torch.randn(3), -1))\n" in out
    stdin(monkeypatch, "x = 1\n")
    assert run(capsys, "check", "--isolated", "-")[:2] == (0, "All checks passed!\n")


@pytest.mark.parametrize("argv, needle", [
    (["-", "a.py"], "cannot be combined with other paths"),
    (["--fix", "-"], "need files, not standard input"),
    (["--stdin-filename", "x.py", "a.py"], "--stdin-filename names standard input"),
])
def test_stdin_misuse_is_a_usage_error(capsys, argv, needle):
    code, _, err = run(capsys, "check", "--isolated", *argv)
    assert code == 2 and needle in err


def test_output_file_gets_the_report_and_stdout_nothing(tmp_path, capsys):
    f = tmp_path / "a.py"
    f.write_text(BUG, encoding="utf-8")
    report = tmp_path / "out" / "report.json"
    code, out, err = run(capsys, "check", "--isolated", "--no-cache", "--output-format", "json", "-o", str(report), str(f))
    assert (code, out) == (2, "") and f"--output-file {report}: No such file or directory" in err
    report.parent.mkdir()
    code, out, err = run(capsys, "check", "--isolated", "--no-cache", "--output-format", "json", "-o", str(report), str(f))
    assert (code, out) == (1, "")
    assert [d["code"] for d in json.loads(report.read_text(encoding="utf-8"))] == ["STB001"]
    code, _, _ = run(capsys, "check", "--isolated", "--no-cache", "--output-file", str(report), str(f))
    assert report.read_text(encoding="utf-8").endswith("Found 1 problem in 1 file.\n[*] 1 fixable with --fix.\n")
    assert os.listdir(report.parent) == ["report.json"]  # no temporary file left


def test_full_format_shows_the_line_and_a_caret_under_the_span(tmp_path, capsys):
    f = tmp_path / "a.py"
    f.write_text(BUG.replace("y = ", "if 1:\n\ty = ").replace("\n\n", "\n"), encoding="utf-8")
    code, out, _ = run(capsys, "check", "--isolated", "--no-cache", "--output-format", "full", str(f))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].endswith(":4:6: STB001 [*] log of softmax is -inf once a class probability underflows to 0; "
                             "use torch.nn.functional.log_softmax")
    assert lines[1:5] == [
        "  |",
        "4 |     y = torch.log(F.softmax(torch.randn(3), -1))",
        "  |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "  |",
    ]
    assert lines[-2:] == ["Found 1 problem in 1 file.", "[*] 1 fixable with --fix."]


def test_full_format_on_a_notebook_shows_the_line_of_the_cell(capsys):
    root = Path(__file__).resolve().parent.parent
    code, out, _ = run(capsys, "check", "--isolated", "--no-cache", "--output-format", "full", "--select", "STB102",
                       str(root / "fixtures" / "notebooks" / "classifier.ipynb"))
    assert code == 1
    head, gutter, line, caret = out.splitlines()[:4]
    assert ":cell 7:3:30: STB102 " in head and gutter == "  |"
    assert line == "3 | bce = F.binary_cross_entropy(p, labels.float())  # expect: STB102"
    assert caret == "  | " + " " * 29 + "^"


def test_pytest_plugin_hint_names_its_own_flag():
    from stabcheck.pytest_plugin import _report_text
    from stabcheck.runtime.hints import UNREPLAYABLE_HINT
    from stabcheck.runtime.report import TrapReport

    text = " ".join(_report_text(TrapReport(phase="forward", kind="nan", hint=UNREPLAYABLE_HINT)).split())
    assert "--stabcheck-trap-per-op" in text and " --per-op" not in text
