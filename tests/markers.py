"""The fixture marker grammar (DESIGN.md): expectations written on the line
they describe.

    loss = criterion(torch.sigmoid(logits), y)   # expect: STB102
    a = torch.log(p) + torch.log(1 - p)          # expect: STB002, STB002
    x = model.crit(torch.sigmoid(logits), y)     # todo-expect: STB102

`expect` lists the findings the line must produce (a code twice = two
findings); every other line must produce none. `todo-expect` is a known miss:
the test fails once it starts firing, so the marker gets promoted.
"""

from __future__ import annotations

import re
from collections import Counter

_MARKER = re.compile(r"#\s*(todo-expect|expect):\s*(STB\d{3}(?:\s*,\s*STB\d{3})*)")


def parse(source: str) -> tuple[Counter, Counter]:
    expect: Counter = Counter()
    todo: Counter = Counter()
    for row, line in enumerate(source.splitlines(), start=1):
        for m in _MARKER.finditer(line):
            target = todo if m.group(1) == "todo-expect" else expect
            for code in re.split(r"\s*,\s*", m.group(2).strip()):
                target[(row, code)] += 1
    return expect, todo
