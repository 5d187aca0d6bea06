from __future__ import annotations

from stabcheck import names as N
from stabcheck.checks.base import Check, origin
from stabcheck.values import LossObj, Prob, Qual, Raw

_LOGITS = (N.SOFTMAX_LOGITS, N.SIGMOID_LOGITS)
_PROBS = (N.CE_PROBS, N.BCE_PROBS)


def _family(loss_node, loss_val) -> str | None:
    if isinstance(loss_val, LossObj):
        return loss_val.family
    value = getattr(loss_node, "value", None)
    if isinstance(value, str):
        return N.KERAS_LOSS_STRINGS.get(value)
    if isinstance(loss_val, Qual):
        spec = N.LOSS_FUNCS.get(loss_val.name)
        return spec.family if spec is not None else None
    return None


class KerasFromLogitsMismatch(Check):
    code = "STB105"
    slug = "keras-from-logits-mismatch"
    summary = "Keras model output and loss disagree on logits vs probabilities (from_logits)"

    def on_compile(self, node, loss, loss_val, out):
        family = _family(loss, loss_val)
        if family is None:
            return
        if isinstance(out, Prob) and family in _LOGITS:
            self.report(
                loss,
                f"the model ends in {out.src}{origin(out, loss)} but the loss is told from_logits=True: "
                "it applies a second activation; drop the output activation (preferred) or use from_logits=False",
            )
        elif isinstance(out, Raw) and family in _PROBS:
            self.report(
                loss,
                f"the model's last layer is linear{origin(out, loss)} but the loss expects probabilities: "
                "pass from_logits=True (e.g. keras.losses.CategoricalCrossentropy(from_logits=True))",
            )
