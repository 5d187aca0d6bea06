"""The trap report as HTML, for a notebook's cell output.

The same content as the JSON report: the panel's rows, the tensor statistics
as a table, every other field of `to_dict()` (fields added later too) as a
row, the loss/gradient history as inline SVG sparklines when a report has
one, and the JSON itself under a fold. Inline styles only (notebook front
ends drop <style> and <script> from untrusted output); every value escaped.
"""

from __future__ import annotations

import html
import json
import math

from stabcheck.runtime.report import Location, TrapReport, _fmt_num

_RED = "#c62828"
_BOX = f"border:1px solid {_RED};border-radius:4px;margin:4px 0;max-width:62em;font-size:13px;line-height:1.35"
_TITLE = f"background:{_RED};color:#fff;font-weight:bold;padding:4px 8px"
_KEY = "font-weight:bold;padding:2px 10px 2px 8px;vertical-align:top;white-space:nowrap;text-align:left"
_VAL = "padding:2px 8px 2px 0;text-align:left"
_CELL = "padding:1px 6px;text-align:right;font-family:monospace"
_FOOT = "padding:3px 8px;opacity:.75;border-top:1px solid rgba(127,127,127,.3)"
_STAT_COLUMNS = ("shape", "dtype", "device", "min", "max", "zeros", "negatives", "nan", "+inf", "-inf")
# fields shown by their own rows, the table or the footer; any other field gets a generic row
_SHOWN = {"status", "framework", "phase", "op", "kind", "location", "module", "forward", "parameter", "inputs",
          "outputs", "step", "rank", "hint", "rule", "detected", "localized", "history"}


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _where(loc: dict | None) -> str:
    return Location(**{k: loc[k] for k in ("filename", "line", "function")}).short() if loc else ""


def _stat_value(stats: dict, column: str) -> str:
    value = stats.get(column)
    if column == "shape":
        return "x".join(str(d) for d in value or ()) or "scalar"
    if column in ("min", "max"):
        return _fmt_num(value)
    if column in ("nan", "+inf", "-inf") and not value:
        return ""  # counts of non-finite values: only the ones present stand out
    return "" if value is None else str(value)


def _stats_table(data: dict) -> str:
    rows = [(f"input {i}", s) for i, s in enumerate(data.get("inputs") or [])]
    rows += [(f"output {i}", s) for i, s in enumerate(data.get("outputs") or [])]
    if not rows:
        return ""
    head = "".join(f'<th style="{_CELL}">{_e(c)}</th>' for c in ("",) + _STAT_COLUMNS)
    body = []
    for name, stats in rows:
        if "value" in stats:
            span = len(_STAT_COLUMNS)
            cells = f'<td style="{_CELL};text-align:left" colspan="{span}">scalar {_e(stats["value"])}</td>'
        else:
            cells = "".join(f'<td style="{_CELL}">{_e(_stat_value(stats, c))}</td>' for c in _STAT_COLUMNS)
        body.append(f'<tr><th style="{_KEY}">{_e(name)}</th>{cells}</tr>')
    return (f'<table style="border-collapse:collapse;margin:2px 8px 4px 0"><tr>{head}</tr>'
            f'{"".join(body)}</table>')


def _number(value) -> float | None:
    """A history value as a float: JSON has no NaN, so non-finite values may come as null or strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return math.nan if value is None else None


def history_series(history) -> list[tuple[str, list[float]]]:
    """(name, values) per recorded quantity, from either shape a history may take:
    {"loss": [...], "grad_norm": [...]} or [{"step": 3, "loss": ..., ...}, ...]."""
    if isinstance(history, dict):
        items = [(k, v) for k, v in history.items() if isinstance(v, list) and k not in ("step", "steps")]
    elif isinstance(history, list) and history and all(isinstance(r, dict) for r in history):
        keys = list(dict.fromkeys(k for r in history for k in r if k not in ("step", "steps")))
        items = [(k, [r.get(k) for r in history]) for k in keys]
    else:
        return []
    out = []
    for name, raw in items:
        values = [_number(v) for v in raw]
        if values and all(v is not None for v in values):
            out.append((str(name), values))
    return out


def sparkline(values: list[float], width: int = 180, height: int = 30) -> str:
    """An inline SVG line of the finite values; non-finite ones as red marks (NaN and +Inf at the
    top, -Inf at the bottom). A log scale when positive values span more than three decades."""
    n = len(values)
    finite = [v for v in values if math.isfinite(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 1e3
    scaled = [math.log10(v) if log and math.isfinite(v) else v for v in values]
    lo = min((v for v in scaled if math.isfinite(v)), default=0.0)
    hi = max((v for v in scaled if math.isfinite(v)), default=1.0)
    span = (hi - lo) or 1.0
    pad = 3

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return pad + (height - 2 * pad) * (1 - (v - lo) / span)

    parts = []
    run: list[str] = []
    for i, v in enumerate(scaled + [math.nan]):
        if i < n and math.isfinite(v):
            run.append(f"{x(i):.1f},{y(v):.1f}")
            continue
        if len(run) > 1:
            parts.append(f'<polyline fill="none" stroke="currentColor" stroke-width="1.3" points="{" ".join(run)}"/>')
        elif run:
            parts.append(f'<circle cx="{run[0].split(",")[0]}" cy="{run[0].split(",")[1]}" r="1.5" '
                         f'fill="currentColor"/>')
        run = []
        if i < n:
            cy = height - pad if v == -math.inf else pad
            parts.append(f'<circle cx="{x(i):.1f}" cy="{cy}" r="2.5" fill="{_RED}"/>')
    label = "log scale" if log else "linear scale"
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'style="vertical-align:middle"><title>{label}</title>{"".join(parts)}</svg>')


def _history_rows(history) -> list[tuple[str, str]]:
    rows = []
    for name, values in history_series(history):
        last = values[-1]
        shown = _fmt_num(last) if math.isfinite(last) else {math.inf: "+Inf", -math.inf: "-Inf"}.get(last, "NaN")
        first = _fmt_num(values[0]) if math.isfinite(values[0]) else "-"
        rows.append((name, f'{sparkline(values)} <span style="font-family:monospace">{_e(first)} &#8594; '
                           f'{_e(shown)}</span> <span style="opacity:.7">({len(values)} steps)</span>'))
    return rows


def to_html(report: TrapReport) -> str:
    """The report as one self-contained <div>."""
    data = report.to_dict()
    for key, value in vars(report).items():  # fields a newer report has but to_dict() may not list
        data.setdefault(key, value)
    rows: list[tuple[str, str]] = []

    def row(key: str, text) -> None:
        rows.append((key, _e(text)))

    if data.get("rank") is not None:
        row("rank", data["rank"])
    if data.get("op"):
        row("op", f"{data['op']}  ({data.get('phase')})")
    if data.get("parameter"):
        row("parameter", data["parameter"])
    if data.get("location"):
        rows.append(("at", f"<code>{_e(_where(data['location']))}</code>"))
    fwd = data.get("forward")
    if fwd:
        where = f" at {_where(fwd['location'])}" if fwd.get("location") else ""
        row("forward", f"{fwd.get('op') or '?'} ({fwd.get('node')}){where}")
    if data.get("module"):
        row("module", data["module"])
    det = data.get("detected") or {}
    if det:
        where = f" ({_where(det['location'])})" if det.get("location") else ""
        row("detected", f"{det.get('message', '')}{where}")
    if data.get("hint"):
        row("hint", data["hint"])
    if data.get("rule"):
        rows.append(("rule", f"<b>{_e(data['rule'])}</b> <code>stabcheck explain {_e(data['rule'])}</code>"))
    rows += _history_rows(data.get("history"))
    for key, value in data.items():
        if key not in _SHOWN and value not in (None, "", [], {}):
            row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)

    table = "".join(f'<tr><th style="{_KEY}">{_e(k)}</th><td style="{_VAL}">{v}</td></tr>' for k, v in rows)
    stats = _stats_table(data)
    if stats:
        stats = f'<div style="padding:0 0 0 8px;overflow-x:auto">{stats}</div>'
    action = "run stopped" if data.get("status") == "trapped" else "run continues (warn)"
    foot = " &#183; ".join(_e(x) for x in (
        action, data.get("framework"), f"{data.get('phase')} {data.get('kind')}", f"step {data.get('step')}",
        f"localized: {data.get('localized')}"))
    dump = json.dumps(report.to_dict(), indent=2, default=str)
    return (f'<div class="stabcheck-report" style="{_BOX}">'
            f'<div style="{_TITLE}">stabcheck: {_e(report.headline())}</div>'
            f'<table style="border-collapse:collapse;margin:4px 0">{table}</table>'
            f'{stats}'
            f'<div style="{_FOOT}">{foot}</div>'
            f'<details style="padding:0 8px 4px"><summary style="cursor:pointer;opacity:.75">JSON report</summary>'
            f'<pre style="margin:2px 0;font-size:12px">{_e(dump)}</pre></details></div>')
