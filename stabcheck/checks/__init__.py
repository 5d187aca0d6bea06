"""The registry: the only list of rules stabcheck knows.

The catalog (`rules/STBnnn-slug.md`) documents each entry; a test keeps the
two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from stabcheck.checks.base import Check
from stabcheck.checks.log_of_softmax import LogOfSoftmax
from stabcheck.checks.mse_on_probabilities import MseOnProbabilities
from stabcheck.checks.sigmoid_into_bce import SigmoidIntoBce
from stabcheck.checks.softmax_into_logits_loss import SoftmaxIntoLogitsLoss
from stabcheck.checks.unguarded_log_of_probability import UnguardedLogOfProbability

CHECKS: tuple[type[Check], ...] = (
    LogOfSoftmax,
    UnguardedLogOfProbability,
    SoftmaxIntoLogitsLoss,
    SigmoidIntoBce,
    MseOnProbabilities,
)


@dataclass(frozen=True)
class Rule:
    code: str
    slug: str
    summary: str
    check: type[Check] | None = None  # None: reported by the engine itself


# stabcheck's own diagnostics (STB9xx): always on unless ignored explicitly.
INTERNAL_ERROR = Rule("STB900", "internal-error", "stabcheck failed on this file (a bug: please report it)")
SYNTAX_ERROR = Rule("STB901", "syntax-error", "the file cannot be parsed or decoded as Python source")
IO_ERROR = Rule("STB902", "unreadable-file", "the file cannot be read")

RULES: dict[str, Rule] = {c.code: Rule(c.code, c.slug, c.summary, c) for c in CHECKS}
for _meta in (INTERNAL_ERROR, SYNTAX_ERROR, IO_ERROR):
    RULES[_meta.code] = _meta

BY_SLUG: dict[str, Rule] = {r.slug: r for r in RULES.values()}
