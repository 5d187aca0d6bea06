"""Every annotated fixture: findings equal the `expect` markers exactly."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from markers import opt_in_only, parse

from stabcheck.checks import RULES
from stabcheck.engine import FileJob, check_file, check_jobs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# fixtures/runtime holds scripts that run; fixtures/fixes holds autofix goldens.
STATIC = sorted(p for p in FIXTURES.glob("*.py"))
ALL = frozenset(RULES)


def findings(path: Path) -> Counter:
    return Counter((d.row, d.code) for d in check_file(FileJob(str(path), ALL)))


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.name)
def test_fixture_findings_match_markers(path: Path):
    expect, todo = parse(path.read_text(encoding="utf-8"))
    got = findings(path)
    missing = expect - got
    unexpected = got - expect
    lines = path.read_text(encoding="utf-8").splitlines()
    report = [f"missing   {path.name}:{row}: {code}    {lines[row - 1].strip()}" for (row, code) in sorted(missing)]
    report += [f"unexpected {path.name}:{row}: {code}    {lines[row - 1].strip()}" for (row, code) in sorted(unexpected)]
    assert not report, "\n" + "\n".join(report)
    fired_todo = [k for k in todo if got[k]]
    assert not fired_todo, f"known misses now fire, promote them to `expect`: {sorted(fired_todo)}"


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.name)
def test_default_selection_leaves_out_the_opt_in_shapes(path: Path):
    """With the default selection (no opt-in shapes), a fixture produces its
    `expect` markers less its `expect-opt-in` ones."""
    source = path.read_text(encoding="utf-8")
    expect, _ = parse(source)
    got = Counter((d.row, d.code) for d in check_file(FileJob(str(path), ALL, opt_in=frozenset())))
    assert got == expect - opt_in_only(source)


def test_there_are_fixtures_for_every_rule():
    codes = set()
    for path in STATIC:
        expect, _ = parse(path.read_text(encoding="utf-8"))
        codes |= {code for _, code in expect}
    implemented = {code for code, rule in RULES.items() if rule.check is not None}
    assert implemented <= codes, f"rules without an expect marker in fixtures/: {sorted(implemented - codes)}"


def test_markers_parse_multiple_codes_and_todos():
    src = "a = 1  # expect: STB002, STB002\nb = 2  # todo-expect: STB102\nc = 3\n"
    expect, todo = parse(src)
    assert expect == Counter({(1, "STB002"): 2})
    assert todo == Counter({(2, "STB102"): 1})


PROJECT = FIXTURES / "project"


def test_provenance_across_modules_of_a_project():
    """fixtures/project is checked as one run: probabilities made in
    mypkg/model.py are found where other modules use them."""
    files = sorted(PROJECT.rglob("*.py"))
    got = Counter((Path(d.path).relative_to(PROJECT).as_posix(), d.row, d.code)
                  for d in check_jobs([FileJob(str(f), ALL) for f in files], workers=1))
    expect = Counter()
    for f in files:
        marks, _ = parse(f.read_text(encoding="utf-8"))
        for (row, code), n in marks.items():
            expect[(f.relative_to(PROJECT).as_posix(), row, code)] += n
    assert got == expect


def test_a_module_checked_alone_does_not_see_the_others():
    diags = check_jobs([FileJob(str(PROJECT / "mypkg" / "train.py"), ALL)], workers=1)
    # Only the label-times-log shape remains; the softmax model is unknown.
    assert [(d.row, d.code) for d in diags] == [(23, "STB002")]
