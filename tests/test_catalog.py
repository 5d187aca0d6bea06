"""The rule catalog and the registry agree, and every page's examples behave:
each *Example* block raises the page's rule, each *Use instead* block raises
nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stabcheck.catalog import pages, slug_of
from stabcheck.checks import RULES
from stabcheck.engine import check_source

ALL = frozenset(RULES)
CHECK_HEADINGS = ["## What it does", "## Why is this bad?", "## Example", "## Use instead"]
META_HEADINGS = ["## What it does", "## Why is this bad?"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^(## .+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def blocks(page: Path, heading: str) -> list[str]:
    return _BLOCK.findall(sections(page.read_text(encoding="utf-8")).get(heading, ""))


def test_catalog_and_registry_agree():
    catalog = pages()
    assert set(catalog) == set(RULES), f"only in catalog: {set(catalog) - set(RULES)}, only in registry: {set(RULES) - set(catalog)}"
    for code, page in catalog.items():
        assert slug_of(page) == RULES[code].slug, page.name
        assert page.read_text(encoding="utf-8").splitlines()[0] == f"# {code}: {RULES[code].slug}"


@pytest.mark.parametrize("code", sorted(RULES))
def test_page_has_the_headings(code):
    text = pages()[code].read_text(encoding="utf-8")
    needed = CHECK_HEADINGS if RULES[code].check is not None else META_HEADINGS
    positions = [text.find(h + "\n") for h in needed]
    assert -1 not in positions, f"{code}: missing {[h for h, p in zip(needed, positions) if p < 0]}"
    assert positions == sorted(positions), f"{code}: headings out of order"


CHECKED = sorted(code for code, rule in RULES.items() if rule.check is not None)


@pytest.mark.parametrize("code", CHECKED)
def test_examples_raise_the_rule(code):
    examples = blocks(pages()[code], "## Example")
    assert examples, f"{code} has no python example"
    for i, src in enumerate(examples):
        codes = [d.code for d in check_source(src, f"{code}-example-{i}.py", ALL)]
        assert code in codes, f"{code} example #{i + 1} does not raise it:\n{src}"


@pytest.mark.parametrize("code", CHECKED)
def test_use_instead_raises_nothing(code):
    fixes = blocks(pages()[code], "## Use instead")
    assert fixes, f"{code} has no python 'Use instead' block"
    for i, src in enumerate(fixes):
        found = [(d.row, d.code) for d in check_source(src, f"{code}-fixed-{i}.py", ALL)]
        assert not found, f"{code} 'Use instead' #{i + 1} raises {found}:\n{src}"


@pytest.mark.parametrize("code", CHECKED)
def test_page_states_its_tier_and_what_it_leaves_out(code):
    tier = sections(pages()[code].read_text(encoding="utf-8")).get("## Tier", "")
    assert "Default" in tier and "deliberately does not report" in tier, f"{code}: no ## Tier section"
