"""What every framework trap shares once it has localised a fault: the
finding, and what happens to the report (stamped with step and rank, written
once as JSON, printed, and the run stopped if asked)."""

from __future__ import annotations

import linecache
import os
import sys
from dataclasses import dataclass, field

from stabcheck.runtime import hints
from stabcheck.runtime.config import EXIT_TRAPPED, NonFiniteError
from stabcheck.runtime.report import Location, TrapReport, render, write_json
from stabcheck.runtime.rerun import exit_now


@dataclass
class Finding:
    """The producer a trap localised, before it becomes a report."""

    phase: str  # forward, backward, input, parameter
    op: str | None
    kind: str  # nan, +inf, -inf
    location: Location | None
    module: str | None = None
    forward: dict | None = None  # for a backward op: the forward op and line
    parameter: str | None = None  # a parameter already non-finite
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    localized: str = "replay"


#: Called with every report as it is emitted, before a stop raises (`trap(on_report=...)`; the
#: IPython extension shows each one in the cell that ran it).
listeners: list = []

#: `stabcheck run` only (rerun.RerunPlan.defer): called with (trap, report) for the first report,
#: before it is printed; True when the runner prints it later, after re-running the script.
defer = None


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


def kind_in(message: str) -> str:
    """The kind a detection message ends with ("... is +inf"), NaN when it names none."""
    return next((k for k in ("nan", "+inf", "-inf") if message.endswith(k)), "nan")


class IncidentSink:
    """Mixin for the torch and TensorFlow traps. Expects `config`,
    `incidents`, `muted`, `first_report`, `stopped` and, optionally,
    `on_stop` (callbacks run before a stopping report is raised)."""

    framework = "torch"
    replay_error: str | None = None  # why the last replay failed, if it did

    def localized_report(self, detected: dict, finding: Finding, hint_op: str | None) -> TrapReport:
        """The report of a producer found; `hint_op` is the op's framework-neutral name (hints.py)."""
        forward_op = finding.forward.get("op") if finding.forward else None
        line = linecache.getline(finding.location.filename, finding.location.line) if finding.location else ""
        first = finding.inputs[0] if finding.inputs else {}
        biggest = [abs(v) for s in finding.inputs for v in (s.get("max"), s.get("min")) if isinstance(v, (int, float))]
        rule, hint = hints.lookup(finding.phase, hint_op, forward_op, finding.kind, line, self.framework,
                                  first.get("max") if isinstance(first.get("max"), (int, float)) else None,
                                  finding.outputs[0].get("dtype") if finding.outputs else None,
                                  max(biggest) if biggest else None)
        if finding.phase == "input" and first.get("argument") in hints.TARGET_ARGUMENTS:
            hint = hints.TARGET_HINT
        return TrapReport(phase=finding.phase, kind=finding.kind, op=finding.op, location=finding.location,
                          module=finding.module, forward=finding.forward, parameter=finding.parameter,
                          inputs=finding.inputs, outputs=finding.outputs, hint=hint, rule=rule, detected=detected,
                          localized=finding.localized, framework=self.framework)

    def unlocalized_report(self, detected: dict, kind: str, note: str, hint: str, outputs=()) -> TrapReport:
        """The report of a value detected whose producer was not found (`note` says why)."""
        if self.replay_error:
            note = f"replay failed ({self.replay_error})"
        detected = dict(detected, message=f"{detected['message']}; {note}")
        loc = detected.get("location")
        return TrapReport(phase="unknown", kind=kind, location=Location(**loc) if loc else None,
                          outputs=list(outputs), hint=hint, detected=detected, localized="no",
                          framework=self.framework)

    def fallback_report(self, detected: dict, exc: Exception) -> TrapReport:
        """The report when building the full one failed: what the check saw, and why no more (a bug of
        stabcheck's must not become an exception in the user's training code)."""
        return self.unlocalized_report(detected, kind_in(detected.get("message", "")), f"stabcheck could not build the report ({type(exc).__name__}: "
                                       f"{exc})", "")

    def stamp(self, report: TrapReport, step: int) -> TrapReport:
        report.step = step
        report.rank = _env_int("RANK")
        report.status = "trapped" if self.config.action == "stop" else "warned"
        return report

    def emit(self, report: TrapReport) -> None:
        self.incidents += 1
        self.muted = True
        deferred = False
        if self.first_report is None:
            self.first_report = report
            if defer is not None:
                try:
                    deferred = defer(self, report)
                except Exception:  # the report is printed now, as without a re-run
                    deferred = False
            if self.config.report_json:  # written now even when deferred: the run may never end cleanly
                try:
                    write_json(report, self.config.report_json, _env_int("WORLD_SIZE"))
                except OSError as exc:
                    print(f"stabcheck: cannot write {self.config.report_json}: {exc}", file=sys.stderr)
            if self.config.rerun_until is not None:  # a re-run: its report is written, it has done its job
                exit_now(EXIT_TRAPPED)
        if not self.config.quiet and not deferred:
            render(report)
        for listener in list(listeners):
            try:
                listener(report)
            except Exception:  # a listener must not hide the report or the stop
                pass
        if self.config.action == "stop":
            self.stopped = report
            for hook in list(getattr(self, "on_stop", ())):
                try:
                    hook(self)
                except Exception:  # a user's hook must not hide the report
                    pass
            raise NonFiniteError(f"stabcheck: {report.headline()}", report)


class TrapSlot:
    """The one active trap of an adapter that keeps its own (NumPy, JAX; their *_api modules read
    `trap`): made, installed and uninstalled here."""

    def __init__(self, make):
        self.make, self.trap = make, None

    def activate(self, config):
        trap = self.make(config)
        trap.install()
        self.trap = trap
        return trap

    def deactivate(self):
        trap, self.trap = self.trap, None
        if trap is not None:
            trap.uninstall()
        return trap
