"""Likely cause, fix and matching static rule for the op that produced a NaN/Inf.

Keys are framework-neutral op names (the aten name without namespace and
overload: `log`, `div`, `sqrt`); a backward op is looked up by the forward op
that created it. Rule codes are the static catalog's (DESIGN.md), so a runtime
report points at the same page as `stabcheck explain CODE`.
"""

from __future__ import annotations

import re

# op -> (rule code or None, hint)
FORWARD: dict[str, tuple[str | None, str]] = {
    "log": ("STB002", "log of an exact 0 (or of a negative number): a probability saturated to 0 or 1 in floating point; "
                      "use log_softmax / logsigmoid / BCE-with-logits on the logits, or clamp the argument to [eps, 1 - eps]"),
    "log2": ("STB002", "log of 0 or of a negative number: clamp the argument to a positive minimum or work in log space"),
    "log10": ("STB002", "log of 0 or of a negative number: clamp the argument to a positive minimum or work in log space"),
    "log1p": ("STB004", "log1p of a value <= -1, or of an overflowed exp: use softplus / logaddexp instead of log(1 + exp(x))"),
    "div": ("STB201", "division by zero: the denominator (often a norm, sum or std) is exactly 0 for some row; "
                      "add an epsilon or use F.normalize(x, eps=...) / clamp_min on the denominator"),
    "reciprocal": ("STB201", "reciprocal of 0: add an epsilon or clamp the argument away from zero"),
    "sqrt": ("STB007", "sqrt of a negative number: clamp the argument to >= 0 (or predict log-variance instead of variance)"),
    "rsqrt": ("STB202", "rsqrt of 0 or of a negative number: add an epsilon before rsqrt"),
    "pow": ("STB202", "pow with a fractional or negative exponent at 0 or at a negative base: add an epsilon / clamp the base"),
    "exp": ("STB005", "exp overflowed (float32 overflows above ~88.7, float16 above ~11): subtract the max before exp "
                      "(use softmax / logsumexp), or use softplus / logaddexp for log(1 + exp(x))"),
    "expm1": ("STB005", "expm1 overflowed: bound the argument or work in log space"),
    "acos": ("STB204", "acos of a value outside [-1, 1]: clamp the cosine to [-1 + eps, 1 - eps]"),
    "asin": ("STB204", "asin of a value outside [-1, 1]: clamp the argument to [-1 + eps, 1 - eps]"),
    "atanh": ("STB204", "atanh of a value at or beyond +-1: clamp the argument to (-1 + eps, 1 - eps)"),
    "mul": (None, "multiplication overflowed (or 0 * inf): values grew too large; check the learning rate, "
                  "normalise activations, or use bfloat16 / loss scaling under float16"),
    "sum": (None, "a reduction overflowed: values grew too large for the dtype; normalise or accumulate in float32"),
    "mean": (None, "a reduction overflowed, or the mean of an empty tensor: check the shapes and the dtype"),
    "var": (None, "variance of a single element (unbiased) or overflow: use correction=0 or guard the size"),
    "std": (None, "std of a single element (unbiased) or overflow: use correction=0 or guard the size"),
    "mm": (None, "matrix product overflowed: activations or weights grew too large; lower the learning rate, clip gradients, "
                 "or add normalisation"),
    "addmm": (None, "linear layer overflowed: activations or weights grew too large; lower the learning rate, clip gradients, "
                    "or add normalisation"),
    "bmm": (None, "batched matrix product overflowed: scale attention scores by 1/sqrt(d) and keep activations bounded"),
    "_softmax": (None, "softmax of a row that is entirely -inf (a fully masked row) gives NaN: keep at least one "
                           "unmasked position or use a large finite negative instead of -inf"),
    "xlogy": (None, "xlogy(x, y) of a negative y is NaN: kl_div's target given as log-probabilities needs "
                    "log_target=True, or the target holds negative values"),
    "digamma": (None, "digamma at 0 (or a negative integer) is infinite: a Gamma / Beta / Dirichlet concentration "
                      "reached 0; keep it above 0 (evidence + 1, softplus(x) + eps)"),
    "lgamma": (None, "lgamma at 0 (or a negative integer) is infinite: a Gamma / Beta / Dirichlet concentration "
                     "reached 0; keep it above 0 (softplus(x) + eps)"),
    "native_layer_norm": (None, "layer norm of a constant row (padding, a blank input) with eps=0 is 0 / 0: keep "
                                "eps > 0 (1e-5)"),
    "cholesky": (None, "Cholesky factorisation of a matrix that is not positive definite (singular, or no longer so after "
                       "rounding: a kernel matrix of near-duplicate points, a covariance with a zero variance): add "
                       "jitter to the diagonal (K + 1e-6 * I), or factorise in float64"),
    "logsumexp": (None, "logsumexp of a row that is entirely -inf (every position masked: an anchor with no positive, "
                        "a sequence with no valid token) is -inf, and what is built on it inf or NaN: leave such rows "
                        "out of the loss, or mask with a large finite negative instead of -inf"),
    "amax": (None, "max of a row that is entirely -inf (every position masked) is -inf: leave such rows out, "
                   "or mask with a large finite negative instead of -inf"),
    "nll_loss_forward": (None, "the mean of a loss over zero targets is 0 / 0: every target of this batch equals "
                               "ignore_index (-100 by default: all labels masked, a prompt longer than the context "
                               "window); skip such batches, or sum the loss (reduction='sum') and divide by "
                               "max(count, 1)"),
    "_log_softmax": (None, "log_softmax of a row that is entirely -inf gives NaN: keep at least one unmasked position"),
    "_to_copy": (None, "a cast to float16 overflowed (float16 holds at most 65504; bfloat16 has float32's range): "
                       "keep this value in float32, scale it down before the cast, or use bfloat16"),
    "copy": (None, "a copy into a float16 tensor overflowed (float16 holds at most 65504): keep the destination "
                   "float32, scale the value down, or use bfloat16"),
}

# forward op whose backward produced the value -> (rule, hint)
BACKWARD: dict[str, tuple[str | None, str]] = {
    "sqrt": ("STB202", "the gradient of sqrt is infinite at 0 (1 / (2 * sqrt(0))); the forward was finite. "
                       "Add an epsilon inside the sqrt: sqrt(x + eps), or use torch.linalg.vector_norm / F.pairwise_distance(eps=...)"),
    "rsqrt": ("STB202", "the gradient of rsqrt is infinite at 0: add an epsilon before rsqrt"),
    "pow": ("STB202", "the gradient of x ** p with p < 1 is infinite at 0: add an epsilon to the base"),
    "norm": ("STB201", "the gradient of a norm is NaN at the zero vector: add an epsilon (F.normalize(x, eps=...)) "
                       "or compute sqrt(sum(x * x) + eps)"),
    "linalg_vector_norm": ("STB201", "the gradient of a norm is NaN at the zero vector: add an epsilon "
                                     "(F.normalize(x, eps=...)) or compute sqrt(sum(x * x) + eps)"),
    "div": ("STB201", "the gradient of a division by a value at 0 is infinite: guard the denominator with an epsilon"),
    "log": ("STB002", "the gradient of log at 0 is infinite: clamp the argument or use a log-space formulation "
                      "(log_softmax, logsigmoid, BCE-with-logits)"),
    "linalg_eigh": (None, "the gradient of eigh's eigenvectors divides by the gaps between eigenvalues: inf/NaN "
                          "where two are equal (a covariance with repeated or zero eigenvalues); add a small jitter "
                          "to the matrix (C + 1e-5 * I), or avoid differentiating the eigenvectors"),
    "xlogy": ("STB002", "the gradient of xlogy(x, y) with respect to y is x / y: 0 / 0 = NaN where both are 0 (an "
                        "entropy xlogy(p, p) at p == 0); compute it from the logits (p * log_softmax(logits)) or "
                        "clamp y away from 0"),
    "acos": ("STB204", "the gradient of acos is infinite at +-1: clamp the argument to [-1 + eps, 1 - eps]"),
    "asin": ("STB204", "the gradient of asin is infinite at +-1: clamp the argument to [-1 + eps, 1 - eps]"),
    "where": (None, "a NaN/Inf in the branch that torch.where masked out still reaches the gradient: "
                    "apply the 'double where' (make the unused branch's input safe first)"),
}

PARAMETER_HINT = ("a parameter is already non-finite before this step: a previous update diverged (learning rate too high, "
                  "no gradient clipping, float16 without loss scaling) or the checkpoint it was loaded from is corrupt")

INIT_PARAMETER_HINT = ("a parameter is non-finite before any update: the code that initialised it or the checkpoint it "
                       "was loaded from made it (a w / w.norm() with a zero row -- nn.Embedding's padding row --, a "
                       "log or sqrt of a zero init); check torch.isfinite(p).all() right after building the model")


def zero_eps(optimizer: str, eps: float) -> str:
    return (f"the optimizer made it: {optimizer} runs with eps={eps:g}, so its update m / (sqrt(v) + eps) is 0 / 0 = NaN "
            "for every entry whose gradient has been exactly 0 so far (embedding rows never looked up, dead or "
            "frozen units); keep the default eps (1e-8), or larger under float16")


INPUT_HINT = "the data fed to the model already contains NaN/Inf: check the data pipeline and its normalisation"
#: the names a loss gives its labels: a non-finite value there is a missing or corrupt label, not a feature
TARGET_ARGUMENTS = frozenset({"target", "targets", "label", "labels", "y", "y_true"})
TARGET_HINT = ("the targets (labels) already contain NaN/Inf: a missing label read as NaN, or a target built by a "
               "division or log in the data pipeline; drop or mask those samples before the loss")
UNREPLAYABLE_HINT = ("the step could not be replayed (no nn.Module call was recorded before it, or it was too long); "
                     "rerun with --per-op to check every op as it runs and name the one that produced the value")
UNLOCALIZED_HINT = ("the value became non-finite but replaying the step did not reproduce it (nondeterministic kernels, "
                    "compiled code, or state the replay cannot see); rerun with --per-op to check every op as it runs")

RERUN_MISSED_HINT = ("the value became non-finite, but a re-run of the script to the same step with every op checked "
                     "did not meet it there: the run does not repeat itself (unseeded random numbers, shuffled data "
                     "order, a checkpoint or other files the first run wrote, nondeterministic kernels); seed it "
                     "(torch.manual_seed, numpy, random, the DataLoader's generator) and skip resuming when "
                     "STABCHECK_RERUN is set so that a re-run can localize it, or run with --per-op to check every "
                     "op as it runs")
PER_OP_UNSEEN_HINT = ("every op was checked as it ran, and none produced the value: it comes from code a Python "
                      "dispatch mode does not see (another thread, a C/CUDA extension writing in place, compiled code); "
                      "check that code's inputs and outputs")
RERUN_UNSEEN_HINT = ("the value came back when the script was re-run with every op checked, but no checked op produced "
                     "it: it comes from code a Python dispatch mode does not see (another thread, a C/CUDA extension "
                     "writing in place, compiled code); check that code's inputs and outputs")


def base_name(op: str | None) -> str:
    """`aten.log.default` -> `log`; `aten.div.Tensor` -> `div`; `SqrtBackward0` -> `sqrt`."""
    if not op:
        return ""
    name = op
    if name.endswith(("Backward0", "Backward1", "Backward")):
        name = name[: name.rindex("Backward")]
        # CamelCase -> snake_case (LinalgVectorNorm -> linalg_vector_norm)
        out = []
        for i, ch in enumerate(name):
            if ch.isupper() and i:
                out.append("_")
            out.append(ch.lower())
        return "".join(out)
    parts = name.split(".")
    if parts[0] in ("aten", "prims", "torch") and len(parts) >= 2:
        name = parts[1]
    elif len(parts) >= 2:
        name = parts[-1]
    name = name.rstrip("_") if not name.startswith("_") else name
    return name


# (op, kind) -> (rule, hint) where the kind of value tells the cause apart
BY_KIND: dict[tuple[str, str], tuple[str | None, str]] = {
    ("log", "-inf"): ("STB002", "log of an exact 0: a probability saturated to 0 or 1 in floating point; use log_softmax / "
                               "logsigmoid / BCE-with-logits on the logits, or clamp the argument to [eps, 1 - eps]"),
    ("log", "nan"): ("STB007", "log of a negative number: the argument is not constrained to be positive; "
                               "predict log(x) directly, or pass it through softplus / exp first"),
    ("div", "+inf"): ("STB201", "division of a non-zero value by exactly 0: guard the denominator with an epsilon "
                                "or clamp_min"),
    ("div", "-inf"): ("STB201", "division of a non-zero value by exactly 0: guard the denominator with an epsilon "
                                "or clamp_min"),
    ("div", "nan"): ("STB201", "0 / 0: a zero row divided by its zero norm, sum or count; add an epsilon, "
                               "use F.normalize(x, eps=...), or clamp_min the denominator"),
}


# (op, pattern on the user's line) -> (rule, hint): the same op means another fault in another idiom;
# the rule codes match what `stabcheck check` reports for that line
def _double_where(op: str, rule: str, fix: str) -> tuple[str, re.Pattern, tuple[str | None, str]]:
    """`where(x > 0, op(x), 0)`: the forward drops op's NaN/Inf, its gradient does not (0 * inf is NaN),
    and clamping first does not help (the gradient at the clamp bound is infinite too)."""
    return (op, re.compile(rf"where\s*\([^#]*\b{op}\s*\("),
            (rule, f"{op} of a value that where() masks out: the forward drops it, but the gradient of the masked "
                   f"branch is 0 * inf = NaN and still reaches the weights (a clamp to the bound does not help). "
                   f"Make the masked branch's input safe too, the 'double where': {fix}"))


BY_LINE: list[tuple[str, re.Pattern, tuple[str | None, str]]] = [
    ("exp", re.compile(r"sqrt\s*\([^#]*exp\s*\(|exp\s*\([^#]*\)\s*\.\s*sqrt\s*\("),
     ("STB006", "sqrt(exp(x)) overflows in exp before the sqrt: compute exp(0.5 * x) instead "
                "(a standard deviation from a log-variance)")),
    ("log", re.compile(r"\.log_prob\s*\("),
     ("STB007", "log inside a distribution's log_prob: its scale (a standard deviation, rate or concentration) reached 0, "
                "or the value lies outside its support; keep the parameter positive with a floor (softplus(x) + 1e-4, or "
                "exp of a predicted log-scale)")),
    _double_where("sqrt", "STB007", "where(x > 0, sqrt(where(x > 0, x, 1.0)), 0.0)"),
    _double_where("log", "STB002", "where(p > 0, log(where(p > 0, p, 1.0)), 0.0)"),
]


# The hints name PyTorch's spellings; a report of another framework gets its own.
_SPELLINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "tensorflow": ((", or use torch.linalg.vector_norm / F.pairwise_distance(eps=...)", ""),
                   ("F.normalize(x, eps=...)", "tf.math.l2_normalize(x, epsilon=...)"),
                   ("clamp_min", "tf.maximum"), ("torch.where", "tf.where")),
    "jax": ((", or use torch.linalg.vector_norm / F.pairwise_distance(eps=...)", ""),
            ("F.normalize(x, eps=...)", "x / jnp.maximum(norm, eps)"),
            ("clamp_min", "jnp.maximum"), ("torch.where", "jnp.where")),
    "numpy": ((", or use torch.linalg.vector_norm / F.pairwise_distance(eps=...)", ""),
              ("F.normalize(x, eps=...)", "x / np.maximum(norm, eps)"),
              ("clamp_min", "np.maximum"), ("torch.where", "np.where")),
}


# log of an exact 0 whose argument held values above 1: no probability (BY_KIND's hint would clip it to 1)
LOG_OF_ZERO_MAGNITUDE = ("STB007", "log of an exact 0 of a value that is no probability (it reaches {max:.4g}): a "
                         "magnitude, count, determinant or scale reached 0; add a floor (log(x + eps), "
                         "log(x.clamp_min(eps))) or compute it in log space (slogdet, log-sum-exp, a predicted log-scale)")


# ops whose +-inf from finite inputs is an overflow of their operands' magnitude
OVERFLOWING = frozenset({"mul", "square", "pow", "mm", "addmm", "bmm", "matmul", "sum", "add",
                         "addv2", "sub", "exp", "conv2d", "convolution", "linear", "dot_general"})
#: a float32 operand this large overflows in the next few products: the values grew step after step
DIVERGED_MAGNITUDE = 1e15
DIVERGED = ("its operands had reached {max:.3g} when it overflowed: the values grew step after step until "
            "they left float32's range, the run diverged. Lower the learning rate (or the peak of its schedule), "
            "clip the gradients, or normalise the activations")
FLOAT16_OVERFLOW = ("float16 holds at most 65504, and this op of values up to {max:.4g} exceeds it: a forward "
                    "overflow, which loss scaling does not help. Compute this layer in float32 (autocast off for it; Keras: "
                    "dtype='float32' on the layer), scale the values down first, or use bfloat16")


def lookup(phase: str, op: str | None, forward_op: str | None = None, kind: str | None = None,
           line: str = "", framework: str = "torch", input_max: float | None = None,
           dtype: str | None = None, magnitude: float | None = None) -> tuple[str | None, str]:
    """(rule, hint) for a producer op, in `framework`'s spellings; empty hint when nothing specific
    is known. `line` is the source of the user's line, for the idioms that the op alone cannot tell
    apart; `input_max` the largest finite value of its first input, `dtype` its output's dtype,
    `magnitude` the largest finite |value| of all its inputs."""
    rule, hint = _lookup(phase, op, forward_op, kind, line)
    if (phase == "forward" and kind == "-inf" and base_name(op) in ("log", "log2", "log10") and input_max is not None
            and input_max > 1.0 and rule == BY_KIND[("log", "-inf")][0] and hint == BY_KIND[("log", "-inf")][1]):
        rule, hint = LOG_OF_ZERO_MAGNITUDE[0], LOG_OF_ZERO_MAGNITUDE[1].format(max=input_max)
    name = base_name(op).lower() if op else ""
    if phase == "forward" and kind in ("+inf", "-inf") and name in OVERFLOWING and magnitude is not None:
        if dtype == "float16" and magnitude > 1.0 and name != "exp":  # (exp's own hint names float16)
            hint = FLOAT16_OVERFLOW.format(max=magnitude)
        elif magnitude >= DIVERGED_MAGNITUDE:
            hint = DIVERGED.format(max=magnitude)
    for torch_spelling, own in _SPELLINGS.get(framework, ()):
        hint = hint.replace(torch_spelling, own)
    return rule, hint


def _lookup(phase: str, op: str | None, forward_op: str | None, kind: str | None,
            line: str) -> tuple[str | None, str]:
    name = base_name(forward_op if phase == "backward" and forward_op else op)
    for key, pattern, found in BY_LINE:
        if name == key and line and pattern.search(line):
            return found
    if phase == "forward" and kind and (base_name(op), kind) in BY_KIND:
        return BY_KIND[(base_name(op), kind)]
    if phase == "parameter":
        return None, PARAMETER_HINT
    if phase == "input":
        return None, INPUT_HINT
    if phase == "backward" and forward_op:
        found = BACKWARD.get(base_name(forward_op))
        if found:
            return found
    found = FORWARD.get(base_name(op))
    if found:
        return found
    if phase == "backward":
        return None, "the backward pass produced the value; the forward op that created this node is the place to guard"
    return None, ""
