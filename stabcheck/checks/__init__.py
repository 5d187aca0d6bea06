"""The registry: the only list of rules stabcheck knows.

The catalog (`rules/STBnnn-slug.md`) documents each entry; a test keeps the
two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

from stabcheck.checks.acos_of_cosine import AcosOfCosine
from stabcheck.checks.base import Check
from stabcheck.checks.epsilon_absorbed import EpsilonAbsorbed
from stabcheck.checks.keras_from_logits_mismatch import KerasFromLogitsMismatch
from stabcheck.checks.log_of_softmax import LogOfSoftmax
from stabcheck.checks.log_of_unconstrained import LogOfUnconstrained
from stabcheck.checks.log_one_plus_exp import LogOnePlusExp
from stabcheck.checks.log_sum_exp import LogSumExp
from stabcheck.checks.mse_on_probabilities import MseOnProbabilities
from stabcheck.checks.naive_softmax import NaiveSoftmax
from stabcheck.checks.sigmoid_into_bce import SigmoidIntoBce
from stabcheck.checks.sigmoid_into_logits_loss import SigmoidIntoLogitsLoss
from stabcheck.checks.softmax_into_logits_loss import SoftmaxIntoLogitsLoss
from stabcheck.checks.sqrt_at_zero import SqrtAtZero
from stabcheck.checks.sqrt_of_exp import SqrtOfExp
from stabcheck.checks.unguarded_division import UnguardedDivision
from stabcheck.checks.unguarded_log_of_probability import UnguardedLogOfProbability

# In code order: `stabcheck rules`, the README table and SARIF list them so.
CHECKS: tuple[type[Check], ...] = (
    LogOfSoftmax,
    UnguardedLogOfProbability,
    LogSumExp,
    LogOnePlusExp,
    NaiveSoftmax,
    SqrtOfExp,
    LogOfUnconstrained,
    SoftmaxIntoLogitsLoss,
    SigmoidIntoBce,
    SigmoidIntoLogitsLoss,
    MseOnProbabilities,
    KerasFromLogitsMismatch,
    UnguardedDivision,
    SqrtAtZero,
    EpsilonAbsorbed,
    AcosOfCosine,
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
UNUSED_NOQA = Rule("STB903", "unused-noqa", "a `# noqa: STB...` code that suppresses nothing on its line")

RULES: dict[str, Rule] = {c.code: Rule(c.code, c.slug, c.summary, c) for c in CHECKS}
for _meta in (INTERNAL_ERROR, SYNTAX_ERROR, IO_ERROR, UNUSED_NOQA):
    RULES[_meta.code] = _meta

BY_SLUG: dict[str, Rule] = {r.slug: r for r in RULES.values()}
