"""What every framework trap does with a finished report: stamp it with the
step and rank, write the JSON once, print it, and stop the run if asked."""

from __future__ import annotations

import os
import sys

from stabcheck.runtime.config import NonFiniteError
from stabcheck.runtime.report import TrapReport, render, write_json


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


class IncidentSink:
    """Mixin for the torch and TensorFlow traps. Expects `config`,
    `incidents`, `muted`, `first_report`, `stopped` and, optionally,
    `on_stop` (callbacks run before a stopping report is raised)."""

    def stamp(self, report: TrapReport, step: int) -> TrapReport:
        report.step = step
        report.rank = _env_int("RANK")
        report.status = "trapped" if self.config.action == "stop" else "warned"
        return report

    def emit(self, report: TrapReport) -> None:
        self.incidents += 1
        self.muted = True
        if self.first_report is None:
            self.first_report = report
            if self.config.report_json:
                try:
                    write_json(report, self.config.report_json, _env_int("WORLD_SIZE"))
                except OSError as exc:
                    print(f"stabcheck: cannot write {self.config.report_json}: {exc}", file=sys.stderr)
        if not self.config.quiet:
            render(report)
        if self.config.action == "stop":
            self.stopped = report
            for hook in list(getattr(self, "on_stop", ())):
                try:
                    hook(self)
                except Exception:  # a user's hook must not hide the report
                    pass
            raise NonFiniteError(f"stabcheck: {report.headline()}", report)
