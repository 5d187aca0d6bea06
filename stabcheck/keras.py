"""Keras callback: the stabcheck runtime trap inside `model.fit`, without `stabcheck run`.

    from stabcheck.keras import TrapNonFinite

    model.fit(x, y, callbacks=[TrapNonFinite()])             # stop at the first NaN/Inf
    model.fit(x, y, callbacks=[TrapNonFinite(action="warn", report_json="nan.json")])

On the TensorFlow backend it turns the TensorFlow trap on for the duration of
`fit` (the report names the op, the line of your code, phase, input
statistics, hint and rule); on the torch backend the PyTorch trap; on any other
backend it watches the batch loss like `keras.callbacks.TerminateOnNaN` and
reports where it was first seen. Under `stabcheck run` it nests in the run's
trap. Importing this module imports Keras (the user's code already has).
"""

from __future__ import annotations

import math
import os

import keras

from stabcheck.runtime.config import NonFiniteError, TrapConfig

__all__ = ["TrapNonFinite"]


class TrapNonFinite(keras.callbacks.Callback):
    """Trap the first NaN/Inf of `fit` and report the op that produced it.

    action: "stop" (default) raises `stabcheck.runtime.NonFiniteError` (a
    FloatingPointError) out of `fit` after the report, before the failing
    step's update; "warn" reports once and lets training go on.
    report_json: also write the report there (the `stabcheck run` schema).
    quiet: no panel on stderr.
    """

    def __init__(self, action: str = "stop", report_json: str | None = None, quiet: bool = False):
        super().__init__()
        self.config = TrapConfig(action=action, report_json=os.path.abspath(report_json) if report_json else None,
                                 quiet=quiet)
        self._cm = None
        self._reported = False
        self.report = None

    def _close(self, stopped: bool = False) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(NonFiniteError if stopped else None, None, None)

    def on_train_begin(self, logs=None):
        self._close(stopped=True)  # a previous fit that stopped with an exception
        self._reported = False
        backend = keras.backend.backend()
        if backend not in ("tensorflow", "torch"):
            return
        from stabcheck.runtime.api import trap

        cm = trap.from_config(self.config)
        active = cm.__enter__()
        self._cm = cm
        if backend == "tensorflow" and active is not None and hasattr(active, "on_stop"):
            active.on_stop.append(self._on_stop)

    def _on_stop(self, active) -> None:
        self.report = active.stopped
        try:
            active.on_stop.remove(self._on_stop)
        except ValueError:
            pass
        self._close(stopped=True)

    def on_train_end(self, logs=None):
        self._close()

    def on_train_batch_end(self, batch, logs=None):
        if self._cm is not None or self._reported or not logs:
            return
        loss = logs.get("loss")
        try:
            value = float(loss)
        except (TypeError, ValueError):
            return
        if math.isfinite(value):
            return
        self._reported = True
        self._fallback(batch, value)

    def _fallback(self, batch: int, value: float) -> None:
        """Backends without a trap adapter: report the batch whose loss was non-finite."""
        from stabcheck.runtime.report import TrapReport, render, write_json

        kind = "nan" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
        report = TrapReport(phase="unknown", kind=kind, step=batch, framework=keras.backend.backend(),
                            hint=("the running loss became non-finite; this backend has no op-level trap: rerun on "
                                  "the TensorFlow or torch backend to name the op"),
                            detected={"at": "loss", "message": f"the loss logged by fit is {kind}", "location": None},
                            status="trapped" if self.config.action == "stop" else "warned")
        self.report = report
        if self.config.report_json:
            write_json(report, self.config.report_json)
        if not self.config.quiet:
            render(report)
        if self.config.action == "stop":
            self.model.stop_training = True
