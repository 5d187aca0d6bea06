"""Trap configuration, the error raised on a trap, and the hand-over to child processes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

#: Exit status of `stabcheck run` when the trap stopped the run (python itself
#: uses 1 for an uncaught exception and 2 for a missing script).
EXIT_TRAPPED = 3

#: Environment variable that carries the configuration to spawned children.
ENV_VAR = "STABCHECK_RUNTIME"

ACTIONS = ("stop", "warn")


class NonFiniteError(FloatingPointError):
    """Raised into the user's code when the trap stops the run.

    The report has already been printed and written when this is raised, so
    `finally` blocks and context managers of the script still run.
    """

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


@dataclass
class TrapConfig:
    action: str = "stop"  # "stop": raise NonFiniteError after the report; "warn": report and continue
    report_json: str | None = None  # write the report there (JSON, DESIGN.md schema)
    per_op: bool = False  # continuous per-op checking with deferred device-side flags
    quiet: bool = False  # no panel on stderr (the JSON is still written)
    # a re-run by `stabcheck run` (rerun.py): per-op checks from step N on; the process ends at its
    # report or once step N is over
    rerun_until: int | None = None

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {self.action!r}")

    def to_env(self) -> str:
        data = asdict(self)
        if data["report_json"]:
            data["report_json"] = os.path.abspath(data["report_json"])
        return json.dumps(data)

    @classmethod
    def from_env(cls, environ=os.environ) -> "TrapConfig | None":
        raw = environ.get(ENV_VAR)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None
