"""`stabcheck check`: exit codes, formats, selection, configuration, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stabcheck.cli import main

BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"
SIGMOID_BUG = "import torch\n\np = torch.sigmoid(torch.randn(3))\nz = torch.log(p)\n"
CLEAN = "import torch\n\ny = torch.log_softmax(torch.randn(3), -1)\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main(["check", "--isolated", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_cfg(capsys, *argv):
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_codes_and_text_format(tmp_path, capsys):
    bad = write(tmp_path / "bad.py", BUG)
    good = write(tmp_path / "good.py", CLEAN)
    code, out, _ = run(capsys, str(good))
    assert code == 0 and "All checks passed!" in out
    code, out, _ = run(capsys, str(bad))
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{bad}:4:5: STB001 ") or first.startswith(f"{os.path.relpath(bad)}:4:5: STB001 ")
    assert "Found 1 problem in 1 file." in out
    code, _, _ = run(capsys, "--exit-zero", str(bad))
    assert code == 0


def test_json_format_is_ruff_shaped(tmp_path, capsys):
    bad = write(tmp_path / "bad.py", BUG)
    code, out, _ = run(capsys, "--output-format", "json", str(bad))
    assert code == 1
    (item,) = json.loads(out)
    assert item["code"] == "STB001"
    assert item["filename"] == str(bad.resolve())
    assert item["location"] == {"row": 4, "column": 5}
    assert item["end_location"] == {"row": 4, "column": 45}
    assert item["noqa_row"] == 4
    assert set(item) == {"code", "message", "filename", "location", "end_location", "fix", "url", "noqa_row"}


def test_columns_count_characters_not_bytes(tmp_path, capsys):
    src = "import torch\nimport torch.nn.functional as F\nétiquette = 'ü'; y = torch.log(F.softmax(torch.randn(3), -1))\n"
    bad = write(tmp_path / "u.py", src)
    _, out, _ = run(capsys, "--output-format", "json", str(bad))
    (item,) = json.loads(out)
    assert item["location"] == {"row": 3, "column": src.splitlines()[2].index("torch.log") + 1}


def test_select_and_ignore_by_code_and_prefix(tmp_path, capsys):
    f = write(tmp_path / "f.py", BUG + SIGMOID_BUG)
    codes = lambda out: sorted(d["code"] for d in json.loads(out))  # noqa: E731
    assert codes(run(capsys, "--output-format", "json", str(f))[1]) == ["STB001", "STB002"]
    assert codes(run(capsys, "--output-format", "json", "--select", "STB002", str(f))[1]) == ["STB002"]
    assert codes(run(capsys, "--output-format", "json", "--ignore", "STB0", str(f))[1]) == []
    assert codes(run(capsys, "--output-format", "json", "--select", "ALL", "--ignore", "STB001", str(f))[1]) == ["STB002"]
    code, _, err = run(capsys, "--select", "STB999", str(f))
    assert code == 2 and "STB999" in err


def test_default_path_and_directory_walk(tmp_path, capsys, monkeypatch):
    write(tmp_path / "pkg" / "a.py", BUG)
    write(tmp_path / "pkg" / "notes.txt", BUG)
    write(tmp_path / ".venv" / "lib" / "x.py", BUG)
    write(tmp_path / "env2" / "pyvenv.cfg", "home = /usr\n")
    write(tmp_path / "env2" / "lib" / "y.py", BUG)
    write(tmp_path / "build" / "z.py", BUG)
    write(tmp_path / ".git" / "hooks" / "h.py", BUG)
    write(tmp_path / "generated" / "g.py", BUG)
    write(tmp_path / ".gitignore", "generated/\n")
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "--output-format", "json")
    assert code == 1
    assert [Path(d["filename"]).relative_to(tmp_path).as_posix() for d in json.loads(out)] == ["pkg/a.py"]


def test_pyproject_configuration(tmp_path, capsys, monkeypatch):
    write(tmp_path / "pyproject.toml", textwrap.dedent("""
        [tool.stabcheck]
        ignore = ["STB001"]
        extend-exclude = ["legacy"]
        per-file-ignores = { "tests/*.py" = ["STB002"] }
    """))
    write(tmp_path / "src" / "m.py", BUG + SIGMOID_BUG)
    write(tmp_path / "legacy" / "old.py", SIGMOID_BUG)
    write(tmp_path / "tests" / "test_m.py", SIGMOID_BUG)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cfg(capsys, "--output-format", "json", ".")
    found = [(Path(d["filename"]).relative_to(tmp_path).as_posix(), d["code"]) for d in json.loads(out)]
    assert found == [("src/m.py", "STB002")]
    assert code == 1


@pytest.mark.parametrize(
    "body, needle",
    [
        ('[tool.stabcheck]\nselct = ["STB001"]\n', "unknown key 'selct'"),
        ('[tool.stabcheck]\nselect = "STB001"\n', "select must be a list of strings"),
        ('[tool.stabcheck]\nignore = ["XYZ1"]\n', "unknown rule selector 'XYZ1'"),
        ('[tool.stabcheck]\nper-file-ignores = { "a.py" = "STB001" }\n', "per-file-ignores"),
        ('[tool.stabcheck]\nrespect-gitignore = "yes"\n', "respect-gitignore"),
        ("[tool.stabcheck\nselect = 1\n", "invalid TOML"),
    ],
)
def test_broken_configuration_is_exit_2_naming_the_problem(tmp_path, capsys, monkeypatch, body, needle):
    write(tmp_path / "pyproject.toml", body)
    write(tmp_path / "m.py", CLEAN)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cfg(capsys, ".")
    assert code == 2
    assert needle in err and "pyproject.toml" in err


def test_explicit_config_file(tmp_path, capsys):
    cfg = write(tmp_path / "conf" / "pyproject.toml", '[tool.stabcheck]\nselect = ["STB002"]\n')
    f = write(tmp_path / "f.py", BUG + SIGMOID_BUG)
    code, out, _ = run_cfg(capsys, "--config", str(cfg), "--output-format", "json", str(f))
    assert [d["code"] for d in json.loads(out)] == ["STB002"]
    code, _, err = run_cfg(capsys, "--config", str(tmp_path / "missing.toml"), str(f))
    assert code == 2 and "missing.toml" in err


def test_missing_path_is_an_error_but_the_rest_is_checked(tmp_path, capsys):
    bad = write(tmp_path / "bad.py", BUG)
    nope = tmp_path / "nope.py"
    code, out, err = run(capsys, str(nope), str(bad))
    assert code == 2
    assert f"{nope}:1:1: STB902 no such file or directory" in out and "STB001" in out
    # Alone, and in JSON, it is still a finding, never "All checks passed!" or `[]`.
    code, out, _ = run(capsys, str(nope))
    assert code == 2 and "All checks passed!" not in out and "Found 1 problem in 1 file." in out
    code, out, _ = run(capsys, "--output-format", "json", "--ignore", "STB902", str(nope))
    assert code == 2
    assert [(d["code"], d["filename"]) for d in json.loads(out)] == [("STB902", str(nope))]


def test_bad_files_are_per_file_diagnostics(tmp_path, capsys):
    write(tmp_path / "syntax.py", "def f(:\n    pass\n")
    (tmp_path / "latin1.py").write_bytes(b"x = '\xe9t\xe9'\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\ny = 2\x00\n")
    write(tmp_path / "empty.py", "")
    (tmp_path / "dangling.py").symlink_to(tmp_path / "does-not-exist.py")
    (tmp_path / "loop_a.py").symlink_to(tmp_path / "loop_b.py")
    (tmp_path / "loop_b.py").symlink_to(tmp_path / "loop_a.py")
    (tmp_path / "dir.py").mkdir()
    write(tmp_path / "real.py", BUG)
    code, out, err = run(capsys, "--output-format", "json", str(tmp_path))
    by_file = {Path(d["filename"]).name: d for d in json.loads(out)}
    assert by_file["syntax.py"]["code"] == "STB901" and by_file["syntax.py"]["location"]["row"] == 1
    assert by_file["latin1.py"]["code"] == "STB901" and "0xe9" in by_file["latin1.py"]["message"]
    assert by_file["nul.py"]["code"] == "STB901" and by_file["nul.py"]["location"] == {"row": 2, "column": 6}
    assert by_file["dangling.py"]["code"] == "STB902"
    assert by_file["loop_a.py"]["code"] == "STB902" and by_file["loop_b.py"]["code"] == "STB902"
    assert by_file["real.py"]["code"] == "STB001"
    assert "empty.py" not in by_file
    assert "Traceback" not in err
    assert code == 1


@pytest.mark.slow
def test_huge_generated_file(tmp_path, capsys):
    lines = ["import torch", "import torch.nn.functional as F"]
    lines += [f"w{i} = torch.log(torch.randn(3) + {i})" for i in range(50_000)]
    lines.append("bad = torch.log(F.softmax(torch.randn(3), -1))")
    f = write(tmp_path / "gen.py", "\n".join(lines) + "\n")
    code, out, _ = run(capsys, str(f))  # text: JSON would also show the fix, through libcst (tested elsewhere)
    assert code == 1 and out.splitlines()[0].startswith(f"{f}:50003:") and " STB001 " in out


def test_deep_nesting_does_not_crash(tmp_path, capsys):
    expr = "torch.log(" * 150 + "x" + ")" * 150
    f = write(tmp_path / "deep.py", f"import torch\nx = 1\ny = {expr}\nz = {'(' * 300}1{')' * 300}\n")
    code, out, err = run(capsys, str(f))
    assert "Traceback" not in out + err
    assert code in (0, 1)


def test_parallel_and_serial_agree(tmp_path, capsys):
    for i in range(40):
        write(tmp_path / f"m{i}.py", BUG if i % 3 else SIGMOID_BUG)
    _, serial, _ = run(capsys, "--output-format", "json", "-j", "1", str(tmp_path))
    _, parallel, _ = run(capsys, "--output-format", "json", "-j", "2", str(tmp_path))
    assert json.loads(serial) == json.loads(parallel)
    assert len(json.loads(serial)) == 40


def test_statistics(tmp_path, capsys):
    write(tmp_path / "a.py", BUG + SIGMOID_BUG)
    write(tmp_path / "b.py", SIGMOID_BUG)
    _, out, _ = run(capsys, "--statistics", str(tmp_path))
    assert out.splitlines()[:2] == ["    2\tSTB002\tunguarded-log-of-probability", "    1\tSTB001\tlog-of-softmax"]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", "--output-format", "xml"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_rules_and_explain(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert "STB001  log-of-softmax" in out
    assert main(["explain", "STB001"]) == 0
    page = capsys.readouterr().out
    assert page.startswith("# STB001: log-of-softmax")
    assert main(["explain", "log-of-softmax"]) == 0
    assert capsys.readouterr().out == page
    assert main(["explain", "STB999"]) == 2
    assert "unknown rule" in capsys.readouterr().err


def test_module_entry_point_and_no_traceback(tmp_path):
    f = write(tmp_path / "bad.py", BUG)
    proc = subprocess.run(
        [sys.executable, "-m", "stabcheck", "check", "--isolated", str(f), str(tmp_path / "missing")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "STB001" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_an_excluded_directory_named_on_the_command_line_is_checked(tmp_path, capsys, monkeypatch):
    write(tmp_path / "pyproject.toml", '[tool.stabcheck]\nextend-exclude = ["legacy"]\n')
    write(tmp_path / "legacy" / "old.py", SIGMOID_BUG)
    write(tmp_path / "legacy" / "__pycache__" / "x.py", SIGMOID_BUG)
    monkeypatch.chdir(tmp_path)
    _, out, _ = run_cfg(capsys, "--output-format", "json", ".")
    assert json.loads(out) == []
    _, out, _ = run_cfg(capsys, "--output-format", "json", "legacy")
    assert [Path(d["filename"]).relative_to(tmp_path).as_posix() for d in json.loads(out)] == ["legacy/old.py"]
