"""The fixture marker grammar (DESIGN.md): expectations written on the line
they describe.

    loss = criterion(torch.sigmoid(logits), y)   # expect: STB102
    a = torch.log(p) + torch.log(1 - p)          # expect: STB002, STB002
    x = model.crit(torch.sigmoid(logits), y)     # todo-expect: STB102

`expect` lists the findings the line must produce (a code twice = two
findings); every other line must produce none. `expect-opt-in` is a finding
of a rule's opt-in tier: produced when the rule is selected by code, prefix
or ALL, absent from the default selection. `todo-expect` is a known miss:
the test fails once it starts firing, so the marker gets promoted.

    n = u / u.norm(dim=-1, keepdim=True)         # expect-opt-in: STB201
"""

from __future__ import annotations

import re
from collections import Counter

_MARKER = re.compile(r"#\s*(todo-expect|expect-opt-in|expect):\s*(STB\d{3}(?:\s*,\s*STB\d{3})*)")


def _markers(source: str):
    for row, line in enumerate(source.splitlines(), start=1):
        for m in _MARKER.finditer(line):
            for code in re.split(r"\s*,\s*", m.group(2).strip()):
                yield m.group(1), row, code


def parse(source: str) -> tuple[Counter, Counter]:
    """(findings with every shape selected, known misses)."""
    expect: Counter = Counter()
    todo: Counter = Counter()
    for kind, row, code in _markers(source):
        (todo if kind == "todo-expect" else expect)[(row, code)] += 1
    return expect, todo


def opt_in_only(source: str) -> Counter:
    """The `expect-opt-in` findings: absent from the default selection."""
    return Counter((row, code) for kind, row, code in _markers(source) if kind == "expect-opt-in")
