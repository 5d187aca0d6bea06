"""The framework-neutral trap report: a rich panel on stderr and a JSON file.

JSON schema (DESIGN.md, "Runtime trap"), one object per incident:

    status      "trapped" (the run was stopped) or "warned" (--action warn)
    framework   "torch" | "tensorflow" | "numpy" | "jax"
    phase       "forward" | "backward" | "parameter" | "input" | "unknown"
    op          producing op ("aten.log.default"; TensorFlow: the op type, "Log");
                null for parameter/input
    kind        "nan" | "+inf" | "-inf"
    location    {filename, line, function}: the user's line (for a backward op:
                the line of the forward op that created it)
    module      module path ("model.encoder.fc2") or null
    forward     for backward ops: {op, node, location}; else null
    parameter   for phase "parameter": the parameter's name
    inputs      list of statistics (see `tensor stats` below) or {"value": x}
    outputs     same, for the op's outputs
    step        optimizer steps completed before the incident (0-based index of
                the step that failed); null for NumPy code (no notion of a step)
    mode        "training" | "evaluation" (the failing computation ran without
                gradients, or its modules were in eval mode); null if unknown
    rank        RANK of a distributed run, else null
    hint, rule  likely cause and fix; static rule code (STBnnn) or null
    detected    {at: "loss" | "backward" | "gradient" | "optimizer" | "op" | "read" | "exit" | "jit",
                 message, location}; "gradient": .grad checked after a backward() that
                 no optimizer step follows; "read": a host read-back (.item(), print, ...)
                 "jit": the outputs of a jitted JAX call (jax_debug_nans)
    localized   "replay" | "per-op" | "rerun" | "no": how the producer was found ("rerun":
                `stabcheck run` re-ran the script to the step with per-op checks)
    rerun       null, or what the re-run did: {outcome: "localized" | "not reproduced" |
                "not localized" | "failed" | "timed out" | "interrupted" | "skipped",
                step (re-run to), seconds, detail (the line shown in the panel), first (what
                the first run detected, and why its replay failed)}
    divergence  null, or the run diverged before the value overflowed: {steps,
                loss, grad_norm, param_norm (lists, null where not recorded;
                norms every 32 steps or so), lr, growth}

Tensor stats: shape, dtype, device, min, max (over finite values), zeros,
negatives, nan, inf (+inf and -inf together), "+inf", "-inf"; for phase "input",
"argument": the parameter of the call that held it ("target"), or "argument N".
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Location:
    filename: str
    line: int
    function: str

    def short(self) -> str:
        from stabcheck.report.locations import display_path  # the static report's path rule

        return f"{display_path(self.filename)}:{self.line} in {self.function}"


@dataclass
class TrapReport:
    phase: str
    kind: str
    op: str | None = None
    location: Location | None = None
    module: str | None = None
    forward: dict | None = None
    parameter: str | None = None
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    step: int | None = 0
    rank: int | None = None
    hint: str = ""
    rule: str | None = None
    detected: dict = field(default_factory=dict)
    localized: str = "no"
    status: str = "trapped"
    framework: str = "torch"
    mode: str | None = None  # "training" or "evaluation" (no gradient, or modules in eval mode)
    divergence: dict | None = None  # the run diverged: recent loss / norms, learning rate (divergence.py)
    rerun: dict | None = None  # `stabcheck run` re-ran the script to localize the value (rerun.py)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        order = ["status", "framework", "phase", "op", "kind", "location", "module", "forward", "parameter",
                 "inputs", "outputs", "step", "mode", "rank", "hint", "rule", "detected", "localized", "divergence", "rerun"]
        return {key: data[key] for key in order}

    @classmethod
    def from_dict(cls, data: dict) -> "TrapReport":
        """A report read back from its JSON (a re-run's)."""
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if data.get("location"):
            data["location"] = Location(**data["location"])
        return cls(**data)

    def headline(self) -> str:
        what = {"nan": "NaN", "+inf": "+Inf", "-inf": "-Inf"}.get(self.kind, self.kind)
        when = f"evaluation after step {self.step}" if self.mode == "evaluation" else f"step {self.step}"
        if self.step is None:  # NumPy code has no steps
            when = "no step count"
        if self.divergence:
            when += "; the run diverged"
        if self.phase == "parameter":
            return f"parameter {self.parameter} is already {what} ({when})"
        if self.phase == "input":
            return f"the input already contains {what} ({when})"
        if self.op:
            return f"{self.op} produced {what} in {self.phase} ({when})"
        return f"{what} detected at {self.detected.get('at', '?')} ({when}); producer not found"


def _fmt_num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _fmt_stats(s: dict) -> str:
    if "value" in s:
        return f"scalar {s['value']!r}"
    shape = "x".join(str(d) for d in s["shape"]) or "scalar"
    finite = ([f"min {_fmt_num(s['min'])}", f"max {_fmt_num(s['max'])}"] if s["min"] is not None
              else ["no finite value"])
    parts = [f"{s['dtype']}[{shape}] {s['device']}", *finite, f"zeros {s['zeros']}", f"neg {s['negatives']}"]
    bad = [f"{k} {s[k]}" for k in ("nan", "+inf", "-inf") if s.get(k)]
    return "  ".join(parts + bad)


def render(report: TrapReport, stream=None, text_only: bool = False) -> None:
    """Print the report as a rich panel on stderr (plain text if rich is unusable).
    In a Jupyter kernel rich shows it as a display instead, unless `text_only` (no colour either)."""
    stream = stream or sys.stderr
    lines: list[tuple[str, str]] = []
    if report.rank is not None:
        lines.append(("rank", str(report.rank)))
    if report.op:
        lines.append(("op", f"{report.op}  ({report.phase})"))
    if report.parameter:
        lines.append(("parameter", report.parameter))
    if report.location:
        lines.append(("at", report.location.short()))
    if report.forward:
        fwd = report.forward
        where = f" at {Location(**fwd['location']).short()}" if fwd.get("location") else ""
        lines.append(("forward", f"{fwd.get('op') or '?'} ({fwd.get('node')}){where}"))
    if report.module:
        lines.append(("module", report.module))
    for i, s in enumerate(report.inputs):
        if "argument" in s:  # the input of a call found already non-finite: which argument it was
            lines.append(("input", f"{s['argument']}: {_fmt_stats(s)}"))
        else:
            lines.append((f"input {i}", _fmt_stats(s)))
    for i, s in enumerate(report.outputs):
        lines.append((f"output {i}", _fmt_stats(s)))
    det = report.detected
    if det:
        at = det.get("message", "")
        if det.get("location"):
            at += f" ({Location(**det['location']).short()})"
        lines.append(("detected", at))
    if report.divergence:
        from stabcheck.runtime.divergence import sparkline

        for key, label in (("loss", "loss"), ("grad_norm", "grad norm"), ("param_norm", "param norm")):
            values = report.divergence.get(key) or []
            known = [v for v in values if isinstance(v, float)]
            if known:
                lines.append((label, f"{sparkline(values)}  {_fmt_num(known[0])} -> {_fmt_num(known[-1])}"))
    if report.rerun:
        lines.append(("rerun", report.rerun.get("detail", "")))
    if report.hint:
        lines.append(("hint", report.hint))
    if report.rule:
        lines.append(("rule", f"{report.rule}  (stabcheck explain {report.rule})"))
    action = "run stopped" if report.status == "trapped" else "run continues (--action warn)"
    title = f"stabcheck: {report.headline()}"
    try:
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 1))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in lines:
            table.add_row(key, Text(value))
        plain = {"force_jupyter": False, "color_system": None} if text_only else {}
        console = Console(file=stream, stderr=stream is sys.stderr, highlight=False, soft_wrap=False, **plain)
        console.print(Panel(table, title=Text(title, style="bold red"), subtitle=action, title_align="left",
                            border_style="red", expand=False))
    except Exception:  # pragma: no cover - rich missing or broken stream
        stream.write(title + "\n")
        for key, value in lines:
            stream.write(f"  {key:<10} {value}\n")
        stream.write(f"  ({action})\n")
    stream.flush()


def report_path(path: str, rank: int | None, world_size: int | None) -> str:
    """Each rank of a distributed run gets its own file: `{rank}` in PATH, or `.rankN` before the suffix."""
    if rank is None:
        return path
    if "{rank}" in path:
        return path.replace("{rank}", str(rank))
    if world_size and world_size > 1:
        root, ext = os.path.splitext(path)
        return f"{root}.rank{rank}{ext}"
    return path


def write_json(report: TrapReport, path: str, world_size: int | None = None) -> str:
    target = report_path(path, report.rank, world_size)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(report.to_dict(), fh, indent=2, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    return target
