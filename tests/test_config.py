"""`[tool.stabcheck]`: every TOML spelling read, every broken file a message and exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stabcheck.cli import main

SIGMOID_BUG = "import torch\n\np = torch.sigmoid(torch.randn(3))\nz = torch.log(p)\n"  # STB002


def check(capsys, tmp_path, pyproject: str | bytes, *argv):
    path = tmp_path / "pyproject.toml"
    path.write_bytes(pyproject if isinstance(pyproject, bytes) else pyproject.encode())
    (tmp_path / "m.py").write_text(SIGMOID_BUG, encoding="utf-8")
    code = main(["check", "--no-cache", "--output-format", "json", *argv, str(tmp_path / "m.py")])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("spelling", [
    '[tool.stabcheck]\nignore = ["STB002"]\n',
    'tool.stabcheck.ignore = ["STB002"]\n',
    '[tool]\nstabcheck.ignore = ["STB002"]\n',
    '[tool]\nstabcheck = { ignore = ["STB002"] }\n',
    '[ tool . stabcheck ]\nignore = ["STB002"]\n',
    '[tool."stabcheck"]\nignore = ["STB002"]\n',
    "[tool.'stabcheck']\nignore = ['STB002']\n",
    '[tool."\\u0073tabcheck"]\nignore = ["STB002"]\n',
    '[tool.stabcheck]\nignore = ["stb002"]\n',  # codes are case-insensitive
])
def test_every_toml_spelling_of_the_table_is_read(tmp_path, capsys, spelling):
    code, out, err = check(capsys, tmp_path, spelling)
    assert (code, json.loads(out), err) == (0, [], "")


@pytest.mark.parametrize("body, needle", [
    (b'[tool.stabcheck]\nignore = ["STB002"]  # \xe9t\xe9\n', "not UTF-8 (byte 0xe9"),
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ('[tool.stabcheck]\nexclude = ["\\\\"]\n', "exclude: invalid pattern '\\\\'"),
    ('[tool.stabcheck]\nper-file-ignores = { "\\\\" = ["STB002"] }\n', "per-file-ignores: invalid pattern"),
    ("tool = [1]\n", "`tool` must be a table, got [1]"),
    ('tool = { stabcheck = "x" }\n', "[tool.stabcheck] must be a table"),
    ("[project]\nname = 1 2\n", "invalid TOML"),  # a broken pyproject.toml is an error even without our table
])
def test_a_broken_pyproject_is_a_message_and_exit_2(tmp_path, capsys, body, needle):
    code, out, err = check(capsys, tmp_path, body)
    assert code == 2 and out == ""
    assert needle in err and "pyproject.toml" in err and "Traceback" not in err


def test_a_pyproject_that_is_not_a_regular_file_is_refused(tmp_path, capsys):
    (tmp_path / "pyproject.toml").symlink_to("/dev/zero")
    (tmp_path / "m.py").write_text(SIGMOID_BUG, encoding="utf-8")
    assert main(["check", "--no-cache", str(tmp_path / "m.py")]) == 2
    assert "pyproject.toml: cannot read: not a regular file (a character device)" in capsys.readouterr().err


def test_lowercase_codes_are_accepted_everywhere(tmp_path, capsys):
    f = tmp_path / "m.py"
    f.write_text(SIGMOID_BUG.replace("torch.log(p)", "torch.log(p)  # noqa: stb002"), encoding="utf-8")
    g = tmp_path / "n.py"
    g.write_text(SIGMOID_BUG, encoding="utf-8")
    assert main(["check", "--isolated", "--no-cache", str(f)]) == 0
    assert main(["check", "--isolated", "--no-cache", "--ignore", "stb002", str(g)]) == 0
    assert main(["check", "--isolated", "--no-cache", "--select", "stb0", "--output-format", "json", str(g)]) == 1
    assert json.loads(capsys.readouterr().out.split("All checks passed!\n")[-1])[0]["code"] == "STB002"
    assert main(["explain", "stb002"]) == 0


def test_an_unreadable_directory_on_the_way_up_is_no_traceback(tmp_path, capsys, monkeypatch):
    # As root, permission bits stop nothing: simulate the EACCES a stat of
    # `locked/pyproject.toml` and `locked` itself get for another user.
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "m.py").write_text(SIGMOID_BUG, encoding="utf-8")
    real_stat = os.stat

    def stat(path, *args, **kwargs):  # Path.stat, Path.is_dir and os.path.isfile come here too
        if isinstance(path, (str, os.PathLike)) and (Path(path) == locked or locked in Path(path).parents):
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    code = main(["check", "--no-cache", str(locked), str(locked / "m.py")])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    assert "m.py:1:1: STB902 cannot read file: Permission denied" in out
