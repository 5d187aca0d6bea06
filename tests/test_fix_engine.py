"""The libcst fix engine and how `--fix` writes: verification, recomputed
fixes (a planted cache injects nothing), safe writes, notebooks changed only
where fixed, and files that always still parse (fixtures and a fuzzed set)."""

from __future__ import annotations

import ast
import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import tokenize
from collections import Counter
from pathlib import Path

import pytest

from stabcheck import autofix, fix_engine, safe_write
from stabcheck.checks import RULES
from stabcheck.cli import main
from stabcheck.engine import FileJob, check_source
from stabcheck.fixes import SAFE, Fix, Op

ROOT = Path(__file__).resolve().parent.parent
ALL = frozenset(RULES)
SOURCE = "import torch\nimport torch.nn.functional as F\n\n\ndef f(x):\n    return torch.log(F.softmax(x, -1))\n"
FIXED = "import torch\nimport torch.nn.functional as F\n\n\ndef f(x):\n    return F.log_softmax(x, -1)\n"


def run(capsys, *argv):
    code = main(["check", "--isolated", "--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def comments(source: str) -> Counter:
    return Counter(t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT)


def the_fix(source: str) -> Fix:
    (d,) = [d for d in check_source(source, "m.py", ALL) if d.fix is not None]
    return d.fix


def test_a_fix_whose_result_is_not_what_the_rule_wants_is_dropped():
    fix = the_fix(SOURCE)
    op = fix.ops[0]
    wrong = fix._replace(ops=(op._replace(params=(".exp",)),))  # would write `F.exp(x, -1)`
    result = fix_engine.apply(SOURCE, [wrong])
    assert result.source == SOURCE and not result.applied
    ((_, why),) = result.dropped
    assert "not what the rule wants" in why


@pytest.mark.parametrize("params", [("os.system('rm -rf /') or F.log_softmax",), ("F.log_softmax\nimport os",)])
def test_a_fix_never_writes_code_that_is_not_a_name(params):
    fix = the_fix(SOURCE)
    evil = fix._replace(ops=(fix.ops[0]._replace(params=params),))
    result = fix_engine.apply(SOURCE, [evil])
    assert result.source == SOURCE and result.dropped


def test_a_fix_at_a_position_that_moved_is_dropped():
    fix = the_fix(SOURCE)
    shifted = "# a new first line\n" + SOURCE
    result = fix_engine.apply(shifted, [fix])
    assert result.source == shifted and "no longer what was checked" in result.dropped[0][1]


def test_fix_recomputes_instead_of_trusting_the_diagnostics(tmp_path):
    """What the cache says is only a hint: a planted fix is never applied."""
    target = tmp_path / "m.py"
    target.write_text(SOURCE)
    (d,) = [d for d in check_source(SOURCE, str(target), ALL) if d.fix is not None]
    op = d.fix.ops[0]
    planted = d.__class__(**{**d.__dict__, "fix": Fix("x", SAFE, (Op("rename", (op.spans[0],), ("os.system",)),))})
    remaining, applied = autofix.fix_files([planted], [FileJob(str(target), ALL)], False, False, io.StringIO(),
                                           [str(tmp_path.resolve())], io.StringIO())
    assert target.read_text() == FIXED and applied == 1 and not remaining


def test_a_planted_cache_injects_no_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.py").write_text(SOURCE)
    main(["check", "--isolated", "m.py"])
    capsys.readouterr()
    (cache,) = Path(".stabcheck_cache").glob("results-*.json")
    text = cache.read_text()
    assert '".log_softmax"' in text
    cache.write_text(text.replace('".log_softmax"', '"os.system"'))
    _, out, _ = run_cached(capsys, "--output-format", "json", "m.py")
    assert "os.system" not in out and "STB001" in out  # not even shown: the planted plan fails verification
    run_cached(capsys, "--fix", "m.py")
    assert Path("m.py").read_text() == FIXED


def run_cached(capsys, *argv):
    code = main(["check", "--isolated", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_imports_merge_and_go_below_shebang_cookie_and_docstring(tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text(
        '#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n"""Doc."""\nfrom __future__ import annotations\n\n'
        "import numpy as np\nfrom scipy.special import softmax\n\n\n"
        "def f(s):\n    return np.log(softmax(s, axis=1)), np.log(np.sum(np.exp(s), axis=0))\n")
    run(capsys, "--fix", str(target))
    assert target.read_text() == (
        '#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n"""Doc."""\nfrom __future__ import annotations\n\n'
        "import numpy as np\nfrom scipy.special import log_softmax, logsumexp, softmax\n\n\n"
        "def f(s):\n    return log_softmax(s, axis=1), logsumexp(s, axis=0)\n")


def test_fix_keeps_mode_and_leaves_no_temporary_file(tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text(SOURCE)
    os.chmod(target, 0o640)
    run(capsys, "--fix", str(target))
    assert target.read_text() == FIXED
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.py"]


def test_a_symlink_out_of_the_checked_tree_is_not_written(tmp_path, capsys):
    outside, tree = tmp_path / "outside", tmp_path / "tree"
    outside.mkdir()
    tree.mkdir()
    (outside / "lib.py").write_text(SOURCE)
    (tree / "link.py").symlink_to(outside / "lib.py")
    code, out, err = run(capsys, "--fix", str(tree))
    assert (outside / "lib.py").read_text() == SOURCE
    assert "outside the checked tree; not written" in err and code == 1 and "STB001" in out


def test_a_file_changed_since_it_was_read_is_not_written(tmp_path):
    target = tmp_path / "m.py"
    target.write_text(SOURCE)
    stale = safe_write.digest(SOURCE.encode())
    target.write_text(SOURCE + "x = 1\n")  # an editor saved meanwhile
    why = safe_write.replace_if_unchanged(str(target), FIXED.encode(), stale, [str(tmp_path.resolve())])
    assert "changed since it was checked" in why and target.read_text() == SOURCE + "x = 1\n"


def _fix_quietly(path: str) -> None:
    with open(os.devnull, "w") as sink:
        sys.stdout = sys.stderr = sink
        os._exit(main(["check", "--isolated", "--no-cache", "--fix", "--unsafe-fixes", "-j", "1", path]))


def test_two_concurrent_fix_runs_never_garble_a_file(tmp_path):
    golden = ROOT / "fixtures" / "fixes"
    names = ["STB001", "STB003", "STB004", "STB006", "STB102"]
    for i in range(4):
        for name in names:
            shutil.copy(golden / f"{name}.py", tmp_path / f"{name}_{i}.py")
    context = multiprocessing.get_context("fork")  # no interpreter start-up: both runs overlap
    runs = [context.Process(target=_fix_quietly, args=(str(tmp_path),)) for _ in range(2)]
    for r in runs:
        r.start()
    for r in runs:
        r.join(120)
    assert all(r.exitcode in (0, 1) for r in runs)  # 1: a file the other run fixed first was skipped
    for i in range(4):
        for name in names:
            fixed = (golden / f"{name}.fixed.py").read_text()
            assert (tmp_path / f"{name}_{i}.py").read_text() == fixed, (name, i)
    assert not [p for p in tmp_path.iterdir() if "stabcheck-tmp" in p.name]


# ---------------------------------------------------------------- notebooks


def _notebook_text(indent: int, ensure_ascii: bool) -> str:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Résumé — ünïcode\n", "1.0e-3 stays spelled so"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {"x": 1.50}, "outputs": [],
         "source": ["import numpy as np\n", "import torch\n", "import torch.nn.functional as F"]},
        {"cell_type": "code", "execution_count": 2, "metadata": {}, "outputs": [],
         "source": ["%matplotlib inline\n", "z = torch.randn(3)  # é\n", "p = torch.log(F.softmax(z, -1))\n",
                    "q = np.log(np.sum(np.exp(z.numpy())))"]},
    ]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                      indent=indent, ensure_ascii=ensure_ascii) + "\n"


@pytest.mark.parametrize("indent, ensure_ascii", [(1, False), (2, True)])
def test_a_notebook_fix_changes_only_the_fixed_source_lines(tmp_path, capsys, indent, ensure_ascii):
    original = _notebook_text(indent, ensure_ascii)
    target = tmp_path / "nb.ipynb"
    target.write_bytes(original.encode().replace(b"1.5,", b"1.50,"))
    before = target.read_text()
    run(capsys, "--fix", str(target))
    after = target.read_text()
    # Exactly: the two fixed lines, and the import added in the imports cell.
    expected = before.replace('"p = torch.log(F.softmax(z, -1))\\n"', '"p = F.log_softmax(z, -1)\\n"')
    expected = expected.replace('"q = np.log(np.sum(np.exp(z.numpy())))"', '"q = logsumexp(z.numpy())"')
    pad = " " * (indent * 4)
    expected = expected.replace('"import torch.nn.functional as F"',
                                f'"import torch.nn.functional as F\\n",\n{pad}"from scipy.special import logsumexp"')
    assert after == expected


# ---------------------------------------------------------------- never a broken file

_SHAPES = [
    "torch.log(F.softmax({x}, -1))", "{x}.softmax(-1).log()", "torch.log(torch.sigmoid({x}))",
    "torch.log(1 - torch.sigmoid({x}))", "torch.log(torch.sum(torch.exp({x}), 1))", "{x}.exp().sum(-1).log()",
    "torch.log(1 + torch.exp({x}))", "torch.log1p(torch.exp({x}))", "torch.sqrt(torch.exp({x}))",
    "{x}.exp().sqrt()", "F.binary_cross_entropy(torch.sigmoid({x}), y)", "F.cross_entropy(F.softmax({x}, 1), y)",
    "torch.exp({x}) / torch.exp({x}).sum(dim=1, keepdim=True)", "1 / (1 + torch.exp(-{x}))",
    "np.log(np.sum(np.exp({x}), axis=0))", "np.log(1 + np.exp({x}))",
]
_OPERANDS = ["x", "(a + b)", "(-x)", "(a @ b.T)", "(a if c else b)", "x[0]", "self.w", "(a  # mid\n        + b)",
             "(y2 := x)", "-x", "a * b", "x ** 2"]
_WRAPS = ["{e}", "({e})", "-{e}", "2 * {e}", "{e}.mean()", "({e}  # inner\n    )", "[{e}]", "{e} if c else 0",
          "f({e}, k={e})"]


def _fuzzed(rng: random.Random) -> str:
    lines = ["import numpy as np", "import torch", "import torch.nn.functional as F", "", "",
             "def g(self, x, a, b, c, y, f):"]
    for i in range(rng.randint(2, 7)):
        shape, operand = rng.choice(_SHAPES), rng.choice(_OPERANDS)
        if shape.startswith("{x}.") and operand not in ("x", "x[0]", "self.w") and operand[0] != "(":
            operand = f"({operand})"  # a receiver needs its parentheses
        expr = shape.replace("{x}", operand)
        expr = rng.choice(_WRAPS).replace("{e}", expr)
        note = rng.choice(["", "  # why", "  # noqa: STB001"])
        lines.append(f"    v{i} = {expr}{note}")
    lines.append("    return " + ", ".join(f"v{i}" for i in range(len(lines) - 6)))
    return "\n".join(lines) + "\n"


def test_fix_never_leaves_a_file_that_does_not_parse_nor_loses_a_comment(tmp_path, capsys):
    rng = random.Random(12)
    sources = {}
    for i in range(30):
        source = _fuzzed(rng)
        ast.parse(source)
        sources[f"fuzz{i}.py"] = source
    for path in ROOT.joinpath("fixtures").rglob("*.py"):
        if "runtime" not in path.parts:
            sources[str(path.relative_to(ROOT)).replace("/", "__")] = path.read_text(encoding="utf-8")
    for name, source in sources.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    run(capsys, "--fix", "--unsafe-fixes", "--extend-select", "ALL", "-j", "1", str(tmp_path))
    changed = 0
    for name, source in sources.items():
        fixed = (tmp_path / name).read_text(encoding="utf-8")
        ast.parse(fixed, filename=name)
        kept = comments(fixed)
        lost = [c for c, n in comments(source).items() if kept[c] < n and "noqa" not in c]
        assert not lost, (name, lost, fixed)
        changed += fixed != source
    assert changed > 35


def test_no_import_that_a_local_name_would_shadow():
    source = "import numpy as np\n\n\ndef f(x):\n    logsumexp = 3\n    return np.log(np.sum(np.exp(x))) + logsumexp\n"
    (d,) = [d for d in check_source(source, "m.py", ALL) if d.code == "STB003"]
    assert d.fix is None


def test_an_import_into_a_module_with_none_goes_below_shebang_and_cookie(tmp_path, capsys):
    target = tmp_path / "m.py"
    target.write_text("#!/usr/bin/env python\n# -*- coding: utf-8 -*-\n# noqa: STB001\ndef g(s):\n"
                      "    import numpy as np\n    return np.log(np.sum(np.exp(s)))\n")
    run(capsys, "--fix", str(target))
    assert target.read_text() == ("#!/usr/bin/env python\n# -*- coding: utf-8 -*-\nfrom scipy.special import logsumexp\n\n"
                                  "def g(s):\n    import numpy as np\n    return logsumexp(s)\n")


def test_any_plan_at_any_node_gives_a_parsable_file_or_a_reason():
    """Plans come from the checks, but also from a cache anyone could write:
    whatever they say, the engine answers with a verified file or a reason."""
    source = ROOT.joinpath("fixtures", "fixes", "STB102.py").read_text()
    spans = sorted({(n.lineno, n.col_offset, n.end_lineno, n.end_col_offset)
                    for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.expr, ast.stmt))})
    rng = random.Random(7)
    params = ["", ".log_softmax", "F.softplus", "method", "function", "comp", "via", "0", "3", "x(", "# c"]
    for _ in range(150):
        kind = rng.choice(sorted(fix_engine.RECIPES))
        ops = (Op(kind, tuple(rng.choice(spans) for _ in range(rng.randint(1, 4))),
                  tuple(rng.choice(params) for _ in range(rng.randint(0, 4)))),)
        result = fix_engine.apply(source, [Fix("x", SAFE, ops, tuple(rng.sample(["numpy.exp", "a.b", "os"], 1)))])
        assert result.applied or result.dropped
        ast.parse(result.source)


def test_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    target = tmp_path / "m.py"
    target.write_text(SOURCE)

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_write.os, "fsync", no_space)
    why = safe_write.replace_if_unchanged(str(target), FIXED.encode(), safe_write.digest(SOURCE.encode()))
    assert why == "cannot write it: No space left on device; left as it was"
    assert target.read_text() == SOURCE and [p.name for p in tmp_path.iterdir()] == ["m.py"]
