"""The precision gate on a corpus every machine has: the standard library.

It must lint with no crash (no STB900) and no finding of the bug rules:
none of it is training code, so anything reported would be a false alarm.
"""

from __future__ import annotations

import sysconfig
from collections import Counter

import pytest

from stabcheck.checks import RULES
from stabcheck.config import Settings
from stabcheck.engine import FileJob, check_jobs
from stabcheck.files import discover
from pathlib import Path


@pytest.mark.slow
def test_standard_library_is_clean():
    stdlib = sysconfig.get_paths()["stdlib"]
    files, missing, _ = discover([stdlib], Settings(root=Path(stdlib)))
    assert not missing and len(files) > 500
    diags = check_jobs([FileJob(f, frozenset(RULES)) for f in files])
    counts = Counter(d.code for d in diags)
    assert set(counts) <= {"STB901"}, [(d.path, d.row, d.code, d.message) for d in diags if d.code != "STB901"]
    # The stdlib's deliberately undecodable test files.
    assert all("test" in d.path for d in diags)


# ---------------------------------------------------------------- roles and tiers
ORACLE = "import numpy as np\n\n\ndef reference_logsumexp(x):\n    return np.log(np.sum(np.exp(x)))\n"
NORM = "import torch\n\n\ndef unit(v):\n    return v / v.norm(dim=-1, keepdim=True)\n"


def _check(tmp_path, files: dict, *args) -> tuple[int, list]:
    """`stabcheck check . *args` in `tmp_path` (in this process), as (exit status, [(file, code)])."""
    import contextlib
    import io
    import json
    import os

    from stabcheck.cli import main

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            code = main(["check", "--no-cache", "--output-format", "json", *args, "."])
    finally:
        os.chdir(cwd)
    return code, sorted((f["filename"].rsplit("/", 1)[-1], f["code"]) for f in json.loads(out.getvalue()))


def test_test_files_hold_oracles_the_bug_rules_leave_alone(tmp_path):
    files = {"tests/test_ops.py": ORACLE, "pkg/ops_test.py": ORACLE, "conftest.py": ORACLE, "pkg/ops.py": ORACLE}
    assert _check(tmp_path, files) == (1, [("ops.py", "STB003")])


def test_per_file_ignores_in_the_configuration_replace_the_test_file_policy(tmp_path):
    files = {"tests/test_ops.py": ORACLE, "pyproject.toml": "[tool.stabcheck]\nper-file-ignores = {}\n"}
    assert _check(tmp_path, files) == (1, [("test_ops.py", "STB003")])
    files["pyproject.toml"] = '[tool.stabcheck]\nextend-per-file-ignores = { "gen/*.py" = ["STB003"] }\n'
    files["gen/made.py"] = ORACLE
    assert _check(tmp_path, files) == (0, [])


def test_opt_in_shapes_need_the_rule_selected_by_name_or_all(tmp_path):
    files = {"model.py": NORM}
    assert _check(tmp_path, files) == (0, [])
    assert _check(tmp_path, files, "--select", "STB201") == (1, [("model.py", "STB201")])
    assert _check(tmp_path, files, "--select", "ALL") == (1, [("model.py", "STB201")])
    assert _check(tmp_path, files, "--extend-select", "STB2") == (1, [("model.py", "STB201")])
    assert _check(tmp_path, files, "--select", "DEFAULT") == (0, [])


def test_gradient_only_rules_are_silent_in_metrics_code():
    from stabcheck.engine import check_source

    src = "import torch\n\n\ndef pairwise(p):\n    return torch.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))\n"
    codes = frozenset(RULES)
    assert [d.code for d in check_source(src, "model/geometry.py", codes)] == ["STB202"]
    assert check_source(src, "torchmetrics/functional/geometry.py", codes) == []
    assert check_source(src, "eval/geometry.py", codes) == []
