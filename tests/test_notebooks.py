"""Notebooks: cells joined, IPython syntax masked, findings located per cell."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from markers import parse

from stabcheck.checks import RULES
from stabcheck.cli import main
from stabcheck.engine import FileJob, check_file
from stabcheck.notebook import parse as parse_notebook
from stabcheck.notebook import source_line_numbers
from stabcheck.report.github import annotation
from stabcheck.report.locations import Physical, display_path
from stabcheck.report.sarif import to_sarif

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "notebooks" / "classifier.ipynb"
ALL = frozenset(RULES)


def notebook(*cells, **meta) -> str:
    """An nbformat-4 notebook as Jupyter writes it (indent 1, one source line per JSON line)."""
    out = []
    for c in cells:
        if isinstance(c, str):
            c = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                 "source": c.splitlines(keepends=True)}
        out.append(c)
    return json.dumps({"cells": out, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main(["check", "--isolated", "--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_fixture_findings_match_markers_per_cell():
    cells = json.loads(FIXTURE.read_text(encoding="utf-8"))["cells"]
    expect = Counter()
    for index, cell in enumerate(cells, start=1):
        if cell["cell_type"] == "code":
            marks, _ = parse("".join(cell["source"]))
            expect.update({(index, row, code): n for (row, code), n in marks.items()})
    got = Counter((d.cell, d.row, d.code) for d in check_file(FileJob(str(FIXTURE), ALL)))
    assert expect, "the fixture lost its markers"
    assert got == expect


def test_text_names_the_cell_and_messages_use_cell_lines(capsys):
    code, out, _ = run(capsys, str(FIXTURE))
    assert code == 1
    line = next(x for x in out.splitlines() if "STB101" in x)
    assert line.startswith(f"{display_path(str(FIXTURE))}:cell 5:3:26: STB101 ")
    assert "(made at cell 5, line 1)" in line


def test_json_has_cell_and_rows_within_the_cell(capsys):
    _, out, _ = run(capsys, "--output-format", "json", str(FIXTURE))
    item = next(d for d in json.loads(out) if d["code"] == "STB102")
    assert item["cell"] == 7
    assert item["location"] == {"row": 3, "column": 30}
    assert item["noqa_row"] == 3


def test_directories_include_notebooks(tmp_path, capsys):
    write(tmp_path / "nb.ipynb", notebook("import torch\n", "y = torch.log(torch.softmax(torch.randn(3), -1))\n"))
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 1
    assert "nb.ipynb:cell 2:1:5: STB001" in out


def test_magics_are_masked_line_for_line():
    nb = parse_notebook(notebook(
        "%time import torch\n!ls -la\nx = !ls\ntorch.log??\n?torch\npip install numpy\nfor i in range(2):\n    %time i\n",
        "%%capture out\nimport numpy as np\n",
        "%%bash\nls | grep x\n",
        "a = (1\n     % 2)\n",
    ).encode())
    lines = nb.source.splitlines()
    assert lines[:8] == ["pass", "pass", "x = None", "pass", "pass", "pass", "for i in range(2):", "    pass"]
    assert lines[8:10] == ["", "import numpy as np"]  # %%capture: Python body kept
    assert lines[10:] == ["a = (1", "     % 2)"]  # a continuation line is not a magic
    assert nb.cells == [1, 2, 4]  # the %%bash cell is skipped
    assert nb.locate(11) == (4, 1)


def test_a_stabcheck_cell_is_python():
    nb = parse_notebook(notebook("%%stabcheck warn\nimport torch\n").encode())  # the runtime trap's cell magic
    assert nb.source.splitlines() == ["", "import torch"] and nb.cells == [1]


def test_invalid_notebooks_are_stb901_not_a_crash(tmp_path, capsys):
    write(tmp_path / "broken.ipynb", '{"cells": [')
    write(tmp_path / "v3.ipynb", json.dumps({"worksheets": [], "nbformat": 3}))
    write(tmp_path / "weird.ipynb", json.dumps({"cells": [{"cell_type": "code", "source": 3}], "nbformat": 4}))
    (tmp_path / "latin1.ipynb").write_bytes(b'{"cells": "\xe9"}')
    code, out, err = run(capsys, str(tmp_path))
    assert code == 1 and "Traceback" not in err
    found = {line.split(":")[0].rsplit("/", 1)[-1]: line for line in out.splitlines()[:-1]}
    assert set(found) == {"broken.ipynb", "v3.ipynb", "weird.ipynb", "latin1.ipynb"}
    assert all(": STB901 cannot read notebook: " in line for line in found.values())
    assert "invalid JSON" in found["broken.ipynb"]


def test_syntax_error_in_a_cell_is_located_in_that_cell(tmp_path, capsys):
    nb = write(tmp_path / "s.ipynb", notebook("import torch\n", "# markdown-ish\nx = (\n"))
    code, out, _ = run(capsys, str(nb))
    assert code == 1
    assert ":cell 2:2:" in out and "STB901" in out


def test_other_kernels_and_empty_notebooks_are_clean(tmp_path, capsys):
    r = write(tmp_path / "r.ipynb", notebook("x <- log(1)\n", kernelspec={"language": "R", "name": "ir"}))
    empty = write(tmp_path / "e.ipynb", notebook())
    assert run(capsys, str(r), str(empty))[0] == 0


def test_single_string_sources_are_checked_and_annotated_on_their_json_line(tmp_path):
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": "import torch\ny = torch.log(torch.softmax(torch.randn(3), -1))"}
    path = write(tmp_path / "s.ipynb", notebook("x = 1\n", cell))
    (d,) = check_file(FileJob(str(path), ALL))
    assert (d.cell, d.row, d.code) == (2, 2, "STB001")
    assert 2 not in source_line_numbers(path.read_text())  # not one source line per JSON line (no --add-noqa)
    # GitHub and SARIF: the line holding the string, no columns, the cell's own position in the message.
    line = annotation(d, Physical())
    props = dict(kv.split("=", 1) for kv in line.split(" ", 1)[1].split("::")[0].split(","))
    assert '"source": "import torch' in path.read_text().split("\n")[int(props["line"]) - 1]
    assert "col" not in props and line.split("::", 2)[2].startswith("cell 2:2:5: ")
    region = to_sarif([d])["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": int(props["line"]), "endLine": int(props["line"])}


def test_source_line_numbers_point_at_the_json_lines():
    text = FIXTURE.read_text(encoding="utf-8")
    lines = text.split("\n")
    first = source_line_numbers(text)
    cells = json.loads(text)["cells"]
    for index, line in first.items():
        assert json.loads(lines[line - 1].strip().rstrip(",")) == cells[index - 1]["source"][0]
    assert {2, 3, 5, 6, 7, 9} <= set(first)  # every non-empty code cell


def test_notebook_sees_the_projects_modules(tmp_path, capsys):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "model.py").write_text(
        "import torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
        "class Net(nn.Module):\n    def forward(self, x):\n        return F.softmax(x, -1)\n",
        encoding="utf-8",
    )
    write(tmp_path / "explore.ipynb", notebook(
        "import torch.nn as nn\nfrom pkg.model import Net\n", "loss = nn.CrossEntropyLoss()(Net()(x), y)\n"
    ))
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 1
    assert "explore.ipynb:cell 2:1:" in out and "STB101" in out
