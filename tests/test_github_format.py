"""`--output-format github`: workflow-command annotations with GitHub's escaping."""

from __future__ import annotations

from pathlib import Path

from stabcheck.cli import main
from stabcheck.diagnostics import Diagnostic
from stabcheck.report.github import annotation, escape_data, escape_property, write_step_summary
from stabcheck.report.locations import Physical

ROOT = Path(__file__).resolve().parent.parent
BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"


def test_one_error_annotation_per_finding(tmp_path, capsys, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BUG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["check", "--isolated", "--no-cache", "--output-format", "github", "."])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("::error file=pkg/bad.py,line=4,col=5,endLine=4,endColumn=45,title=STB001::log of softmax")
    assert out[-1] == "Found 1 problem in 1 file."


def test_escaping_of_data_and_properties():
    assert escape_data("100% sure\r\nnext: a,b") == "100%25 sure%0D%0Anext: a,b"
    assert escape_property("dir:a,b%\n") == "dir%3Aa%2Cb%25%0A"
    d = Diagnostic("STB002", "50% of\nlines", "we,ird:name.py", 3, 1, 5, 2)
    line = annotation(d, Physical())
    # A multi-line span carries no columns (GitHub only uses them on one line).
    assert line == "::error file=we%2Cird%3Aname.py,line=3,endLine=5,title=STB002::50%25 of%0Alines"


def test_notebook_annotations_point_at_the_ipynb_line(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["check", "--isolated", "--no-cache", "--output-format", "github", "fixtures/notebooks/classifier.ipynb"])
    out = capsys.readouterr().out.splitlines()
    lines = (ROOT / "fixtures" / "notebooks" / "classifier.ipynb").read_text(encoding="utf-8").split("\n")
    stb102 = next(x for x in out if "title=STB102" in x)
    props = dict(kv.split("=", 1) for kv in stb102.split(" ", 1)[1].split("::")[0].split(","))
    assert props["file"] == "fixtures/notebooks/classifier.ipynb"
    assert "binary_cross_entropy" in lines[int(props["line"]) - 1]
    assert stb102.split("::", 2)[2].startswith("cell 7:3:30: ")


def test_a_notice_says_when_github_will_drop_annotations(tmp_path, capsys, monkeypatch):
    (tmp_path / "many.py").write_text(BUG + "".join(f"y{i} = torch.log(F.softmax(torch.randn(3), -1))\n" for i in range(11)),
                                      encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    main(["check", "--isolated", "--no-cache", "--output-format", "github", "many.py"])
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("::error ") for line in out) == 12
    assert out[-2] == ("::notice title=stabcheck::12 findings: GitHub shows the first 10 annotations of a step; "
                       "this step's log lists them all")
    main(["check", "--isolated", "--no-cache", "--output-format", "github", str(tmp_path / "many.py"), "--select", "STB9"])
    assert "::notice" not in capsys.readouterr().out


def test_findings_are_added_to_the_job_summary(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.py").write_text(BUG, encoding="utf-8")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    main(["check", "--isolated", "--no-cache", "--output-format", "github", "bad.py"])
    capsys.readouterr()
    text = summary.read_text(encoding="utf-8").splitlines()
    assert text[:4] == ["earlier step", "### stabcheck", "", "Found 1 problem in 1 file."]
    assert text[-1].startswith("| `bad.py:4:5` | STB001 | log of softmax is -inf")


def test_job_summary_escapes_table_cells(tmp_path):
    path = tmp_path / "summary.md"
    write_step_summary([Diagnostic("STB002", "a | b\nc", "x.py", 1, 1, 1, 2)], str(path))
    assert path.read_text(encoding="utf-8").splitlines()[-1] == "| `x.py:1:1` | STB002 | a \\| b c |"
