"""Abstract values the flow analysis assigns to expressions.

`None` is the unknown value: anything stabcheck cannot prove stays silent.
"""

from __future__ import annotations

import ast

from stabcheck.names import LossSpec


class Qual:
    """An imported module, function or class, by canonical qualified name."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class Prob:
    """A probability in [0, 1], or its complement `1 - p`.

    `lo` / `hi`: the value is known to stay away from 0 / from 1 (a guard was
    applied). Flags are about this value, so `1 - p` swaps them.
    """

    __slots__ = ("src", "node", "qual", "comp", "lo", "hi")

    def __init__(self, src, node, qual=None, comp=False, lo=False, hi=False):
        self.src = src  # names.SRC_*
        self.node = node  # where the probability was made (for messages)
        self.qual = qual  # qualified name of the producing function, if any
        self.comp = comp
        self.lo = lo
        self.hi = hi

    def complement(self) -> "Prob":
        return Prob(self.src, self.node, self.qual, not self.comp, self.hi, self.lo)

    def guarded(self, lo: bool, hi: bool) -> "Prob":
        return Prob(self.src, self.node, self.qual, self.comp, self.lo or lo, self.hi or hi)


class Guarded:
    """A value of unknown origin that a clamp, `+ eps` or `maximum` bounded."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: bool, hi: bool):
        self.lo = lo
        self.hi = hi

    def complement(self) -> "Guarded":
        return Guarded(self.hi, self.lo)


class LogOf:
    """`log(p)` / `log(1 - p)` of a bare value of unknown origin, unguarded.

    Harmless alone; a finding once it takes the shape of a hand-rolled
    cross-entropy (`y * log(p)`, `(1 - y) * log(1 - p)`).
    """

    __slots__ = ("node", "key", "comp", "scope")

    def __init__(self, node: ast.AST, key: str, comp: bool, scope: int):
        self.node = node
        self.key = key
        self.comp = comp
        self.scope = scope  # the function it was taken in


class Diff:
    """`a - b` where one side is a probability: the base of a hand-rolled MSE."""

    __slots__ = ("left", "right")

    def __init__(self, left, right):
        self.left = left
        self.right = right


class Delta:
    """`a - b` of two values nothing else is known about: squared, a distance.
    `centred`: `x - mean(x)`, a deviation (squared, a variance), not a distance."""

    __slots__ = ("centred",)

    def __init__(self, centred: bool = False):
        self.centred = centred


class Tup:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


class Layer:
    """Something that returns `ret` when called: an activation module, a
    Sequential, a Keras functional model."""

    __slots__ = ("ret", "sequential", "activation")

    def __init__(self, ret, sequential: str | None = None, activation: bool = False):
        self.ret = ret
        self.sequential = sequential  # qualified name when `.add()` may extend it
        # An activation module (`nn.Softmax(1)`): calling it *is* the softmax,
        # so `log(self.softmax(x))` nests the two directly.
        self.activation = activation


class LossObj:
    """An instance of a loss class (`nn.CrossEntropyLoss()`)."""

    __slots__ = ("spec", "family", "qual")

    def __init__(self, spec: LossSpec, family: str, qual: str):
        self.spec = spec
        self.family = family
        self.qual = qual


class Exp:
    """`exp(x)`; `shifted` when `x` is known to be <= 0 (cannot overflow);
    `maxshift` when that is because its max was subtracted, so a sum of
    these is >= 1 (the max term is exp(0)) and cannot underflow to 0."""

    __slots__ = ("node", "shifted", "qual", "maxshift", "global_max")

    def __init__(self, node, shifted: bool, qual: str | None, maxshift: bool = False, global_max: bool = False):
        self.node = node
        self.shifted = shifted
        self.qual = qual
        self.maxshift = maxshift
        self.global_max = global_max  # shifted by the whole tensor's max, not each row's


class OnePlusExp:
    """`1 + exp(x)` in any order."""

    __slots__ = ("exp",)

    def __init__(self, exp: Exp):
        self.exp = exp


class Sq:
    """`x ** 2`, `square(x)`, `x * x`; `diff` when `x` is a difference
    `a - b` (a squared distance: exactly 0 where the two coincide)."""

    __slots__ = ("node", "diff", "raw")

    def __init__(self, node, diff: bool = False, raw: bool = False):
        self.node = node
        self.diff = diff
        self.raw = raw  # of an unconstrained layer output (a learned scale that can reach 0)


class Red:
    """A reduction: sum, mean, norm, std, max, or sqrt of a sum of squares.

    pos: positive by construction (a sum of probabilities or of exps);
    guarded: an epsilon or clamp keeps it away from 0;
    exp: the unshifted `Exp` it sums (log-sum-exp, naive softmax);
    sumsq: it is a sum (or mean) of squares;
    dist: of squared differences (a squared distance);
    per_row: over some axes only.
    """

    __slots__ = ("kind", "node", "pos", "guarded", "exp", "sumsq", "dist", "per_row")

    def __init__(self, kind, node, pos=False, guarded=False, exp=None, sumsq=False, dist=False, per_row=False):
        self.kind = kind
        self.node = node
        self.pos = pos
        self.guarded = guarded
        self.exp = exp
        self.sumsq = sumsq
        self.dist = dist
        self.per_row = per_row  # over some axes (`sum(dim=1)`), not every element

    def with_guard(self) -> "Red":
        return Red(self.kind, self.node, self.pos, True, self.exp, self.sumsq, self.dist, self.per_row)


class Raw:
    """The unconstrained output of a linear layer (any sign)."""

    __slots__ = ("node",)

    def __init__(self, node):
        self.node = node


class Cosine:
    """A cosine similarity: in [-1, 1] up to rounding. `clamped`: a clamp
    was applied but not strictly inside (-1, 1) where gradients flow."""

    __slots__ = ("node", "guarded", "clamped")

    def __init__(self, node, guarded=False, clamped=False):
        self.node = node
        self.guarded = guarded
        self.clamped = clamped


class Shifted:
    """`x - max(x)`: at most 0, so its `exp` cannot overflow. `global_max`:
    the max of the whole tensor (`x.max()`), which does not keep a per-row
    sum of exps away from 0: rows far below it underflow."""

    __slots__ = ("global_max",)

    def __init__(self, global_max: bool = False):
        self.global_max = global_max


class NonNeg:
    """`abs(x)`: at least 0 (as `x ** 2` is)."""

    __slots__ = ()


class NonPos:
    """`-x ** 2`, `-abs(x)`, `-0.5 * (x / s) ** 2`: at most 0, so its `exp`
    cannot overflow."""

    __slots__ = ()


class LogProb(NonPos):
    """`log_softmax(x)` / `logsigmoid(x)`: <= 0, and its `exp` is that
    probability (`src`)."""

    __slots__ = ("src", "node")

    def __init__(self, src: str, node):
        self.src = src
        self.node = node


class Record:
    """A dict literal with constant keys: `{"probs": softmax(x), ...}`."""

    __slots__ = ("items",)

    def __init__(self, items: dict):
        self.items = items


class Const:
    """A numeric constant bound to a name (`eps = 1e-10`)."""

    __slots__ = ("value",)

    def __init__(self, value: float):
        self.value = value


# Values that ride along reshapes, casts, subscripts and `.detach()`.
TENSOR_VALUES = (Prob, Guarded, LogOf, Exp, Red, Raw, Cosine, Sq, OnePlusExp, NonNeg, NonPos, Delta)
