"""Divergence: a run whose loss grew by orders of magnitude before it overflowed.

The trap keeps a flight recorder of cheap per-step scalars (the loss every step;
the gradient and parameter norms every NORM_EVERY steps, as they cost a pass
over the weights, or less often where that pass is dear next to a step: see
norms_due) on the device, without a sync; they are read only when a report
is built. A report whose recent loss grew by DIVERGED_GROWTH or more is a
divergence: the hint names the learning rate, the JSON carries the numbers and
the panel a sparkline.
"""

from __future__ import annotations

import math

HISTORY = 48  # steps kept
NORM_EVERY = 32  # gradient / parameter norms are recorded every this many steps (a pass over the weights)...
NORM_BUDGET = 0.005  # ... or less often, so that they cost at most this share of the training time ...
NORM_EVERY_MAX = HISTORY - 1  # ... but at least once in the steps a report shows
DIVERGED_GROWTH = 1e3  # last finite loss / typical early loss
_BARS = "▁▂▃▄▅▆▇█"


def diagnose(steps: list[int], losses: list[float | None], grad_norms: list[float | None],
             param_norms: list[float | None], lrs: list[float]) -> dict | None:
    """The divergence record for a report, or None when the loss did not blow up."""
    finite = [abs(v) for v in losses if v is not None and math.isfinite(v)]
    if len(finite) < 3:
        return None
    early = sorted(finite[: max(2, len(finite) // 4)])[0]
    late = max(finite[-3:])
    # three losses are a divergence only when the growth leaves no doubt (a learning rate far too
    # high overflows within a few steps: 5e3, 5e22, inf)
    needed = DIVERGED_GROWTH if len(finite) >= 4 else DIVERGED_GROWTH ** 2
    if late < needed * max(early, 1e-12):
        return None
    return {"steps": steps, "loss": _json(losses), "grad_norm": _json(grad_norms), "param_norm": _json(param_norms),
            "lr": lrs[0] if len(lrs) == 1 else (lrs or None), "growth": late / max(early, 1e-12)}


def norms_due(step: int, cost: float, step_time: float) -> int:
    """The step at which the norms are taken next, after a pass over the weights that took `cost`
    seconds on steps of `step_time` seconds (on a tiny model a pass costs a third of a step)."""
    every = NORM_EVERY
    if step_time > 0:
        every = max(every, min(NORM_EVERY_MAX, math.ceil(cost / (NORM_BUDGET * step_time))))
    return step + every


def _json(values):
    """Non-finite numbers as "nan" / "inf" / "-inf" (the report's JSON allows no NaN)."""
    return [v if v is None or math.isfinite(v) else str(v) for v in values]


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, float) and math.isfinite(v)]


def hint(record: dict) -> str:
    finite = _finite(record["loss"])
    params = _finite(record.get("param_norm") or [])
    if len(params) >= 2 and max(params) < 10 * min(params):
        # the weights stayed put while the loss grew: no update blew up, the forward computation did
        return (f"the loss grew from {finite[0]:.3g} to {finite[-1]:.3g} over the last {len(record['loss'])} steps "
                f"while the parameter norm stayed near {params[-1]:.3g}: the forward computation itself explodes "
                "(a recurrence whose gain is above 1 over longer sequences, activations with no normalisation, "
                "growing inputs), not the update; bound it (normalise, clip the state, shorter sequences) rather "
                "than lowering the learning rate")
    lr = record.get("lr")
    lr_text = f"learning rate {lr:g}" if isinstance(lr, float) else (
        f"learning rates {', '.join(f'{v:g}' for v in lr)}" if lr else "the learning rate (step size)")
    return (f"the run diverged: the loss grew from {finite[0]:.3g} to {finite[-1]:.3g} over the last "
            f"{len(record['loss'])} steps before it overflowed; lower the {lr_text}, clip gradients "
            "(torch.nn.utils.clip_grad_norm_) or add a warm-up; the op that overflowed is where the growth ended, "
            "not its cause")


def sparkline(values: list[float | None]) -> str:
    """One character per value on a log scale ('x' for a non-finite one, ' ' for none)."""
    logs = [math.log10(abs(v) + 1e-30) if isinstance(v, float) and math.isfinite(v) else None for v in values]
    known = [v for v in logs if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    out = []
    for v, raw in zip(logs, values):
        if v is None:
            out.append(" " if raw is None else "x")
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((v - low) / span * (len(_BARS) - 1) + 0.5))])
    return "".join(out)
