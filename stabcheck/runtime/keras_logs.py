"""Keras' logs as the TF trap's last exit: what no gradient saw (the TF trap checks gradients).

A NaN that only the validation data holds, or a metric that divides by zero, never reaches a
gradient: training stays finite and fit prints `val_loss: nan`. Keras hands its callbacks the
logs once per evaluation (`on_test_end`: model.evaluate, fit's validation) and once per epoch
(`on_epoch_end`: the training loss and metrics, the `val_` ones already checked), as Python
numbers: checking them there costs nothing per step. The hook goes on CallbackList (Keras 3)
as soon as Keras has loaded it, and comes off with the trap.
"""

from __future__ import annotations

import math
import sys

_MODULE = "keras.src.callbacks.callback_list"
_ORIGINALS: dict = {}

EVAL_HINT = ("an evaluation step returned it while every training step stayed finite: check the validation or "
             "test data for NaN/Inf (np.isnan(x_val).any(), also in the labels), and the losses and metrics for a "
             "division by zero or a log of 0 on data the training never saw; run it eagerly "
             "(model.compile(run_eagerly=True)) to name the op")
METRIC_HINT = ("a metric is non-finite while the loss and the gradients are finite: the metric divides by zero or "
               "takes a log of 0 on some batch (a relative error by a zero target, a precision with no predicted "
               "positive), or it reads a NaN label the loss masks out (check np.isnan(y).any()); guard its "
               "denominator, or mask the same labels the loss does")


def _kind(value) -> str | None:
    try:
        number = float(value)
    except (TypeError, ValueError):  # not a scalar: a logged array, a string
        return None
    if math.isnan(number):
        return "nan"
    return None if math.isfinite(number) else ("+inf" if number > 0 else "-inf")


def _first_bad(logs, evaluation: bool):
    for name, value in (logs or {}).items():
        if not evaluation and name.startswith("val_"):
            continue  # reported at on_test_end, with its cause
        kind = _kind(value)
        if kind is not None:
            return name, kind
    return None


def hook(trap) -> bool:
    """Put the checks on Keras' CallbackList if Keras has loaded it; True once done."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return False
    cls = module.CallbackList
    _ORIGINALS.update(on_test_end=cls.on_test_end, on_epoch_end=cls.on_epoch_end)

    def on_test_end(self, logs=None):
        bad = _first_bad(logs, evaluation=True)
        if bad is not None:
            name, kind = bad
            trap.report_returned(f"{name} of an evaluation (model.evaluate, or fit's validation data) is {kind}",
                                 EVAL_HINT, "evaluation", None, sys._getframe(1))
        return _ORIGINALS["on_test_end"](self, logs)

    def on_epoch_end(self, epoch, logs=None):
        bad = _first_bad(logs, evaluation=False)
        if bad is not None:
            name, kind = bad
            trap.report_returned(f"the metric {name} of training epoch {epoch} (model.fit) is {kind}",
                                 METRIC_HINT, "training", None, sys._getframe(1), trained=True)
        return _ORIGINALS["on_epoch_end"](self, epoch, logs)

    cls.on_test_end, cls.on_epoch_end = on_test_end, on_epoch_end
    return True


def unhook() -> None:
    module = sys.modules.get(_MODULE)
    if module is not None and _ORIGINALS:
        for name, original in _ORIGINALS.items():
            setattr(module.CallbackList, name, original)
    _ORIGINALS.clear()
