"""IPython and Jupyter: `%load_ext stabcheck` traps every cell run afterwards.

    %load_ext stabcheck            trap every cell from now on (stop at the first NaN/Inf)
    %stabcheck warn                report and go on; also on, off, stop, per-op, no-per-op
    %%stabcheck [warn] [per-op]    trap this cell only
    %stabcheck check [PATH ...]    static findings of the cells run so far, or `stabcheck check PATH`

Each cell gets a fresh `stabcheck.trap()`, entered before it runs and left
after it, so a stop leaves nothing behind and the next cell runs as usual.
A report is shown in the output of the cell that ran into it, as HTML in
Jupyter and as the usual panel in a terminal; code locations name cells by
their execution count, as IPython's tracebacks do (`cell 14:3` is line 3 of
In [14]). In stop mode the cell fails with the trap's NonFiniteError, shown
with a traceback of the cells' frames only. Cells run before torch or
TensorFlow is imported are not trapped, unless they import it themselves.

IPython is imported here only, when the extension is loaded.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import json
import os
import re
import sys
import types
from dataclasses import dataclass

from stabcheck.runtime.config import NonFiniteError

_FRAMEWORK_IMPORT = re.compile(r"^\s*(?:import|from)\s+(torch|tensorflow|keras)\b", re.M)
_CELL_MAGIC = re.compile(r"\s*%%stabcheck\b")
_INPUT_NAME = re.compile(r"<ipython-input-(\d+)-")
_WORDS = {"on", "off", "stop", "warn", "per-op", "no-per-op"}
_CELL_WORDS = {"stop", "warn", "per-op"}

_extensions: dict[int, "Extension"] = {}  # id(shell) -> its extension


@dataclass
class Settings:
    enabled: bool = True
    action: str = "stop"
    per_op: bool = False

    def describe(self) -> str:
        if not self.enabled:
            return "stabcheck: off (`%stabcheck on` traps every cell)"
        action = "stop at the first NaN/Inf" if self.action == "stop" else "report each NaN/Inf and go on"
        checks = "every op checked" if self.per_op else "checked at losses, backward() and optimizer steps"
        return f"stabcheck: trapping every cell ({action}; {checks})"


def _apply(settings: Settings, words: list[str]) -> Settings:
    for word in words:
        if word in ("on", "off"):
            settings = dataclasses.replace(settings, enabled=word == "on")
        elif word in ("stop", "warn"):
            settings = dataclasses.replace(settings, action=word)
        elif word in ("per-op", "no-per-op"):
            settings = dataclasses.replace(settings, per_op=word == "per-op")
    return settings


def _framework_ready(cell: str) -> bool:
    """torch or TensorFlow is imported, or this cell imports it (then it is imported now, as the
    cell would, so that the cell's own code is trapped)."""
    from stabcheck.runtime.tf_api import tf_loaded

    if "torch" in sys.modules or tf_loaded():
        return True
    match = _FRAMEWORK_IMPORT.search(cell)
    if match is None:
        return False
    name = match.group(1)
    if name == "keras":
        name = {"tensorflow": "tensorflow", "torch": "torch"}.get(os.environ.get("KERAS_BACKEND", "tensorflow"))
        if name is None:  # Keras on JAX: no runtime trap
            return False
    try:
        importlib.import_module(name)
    except Exception:  # the cell's own import fails the same way, with its own message
        return False
    return True


class ReportView:
    """A trap report for IPython's display: HTML in Jupyter, the text panel in a terminal."""

    def __init__(self, report):
        self.report = report

    def _repr_html_(self) -> str:
        from stabcheck.runtime.report_html import to_html

        return to_html(self.report)

    def __repr__(self) -> str:
        from stabcheck.runtime.report import render

        buffer = io.StringIO()
        render(self.report, buffer, text_only=True)
        return buffer.getvalue().rstrip("\n")

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))


class Extension:
    """The extension's state in one shell: settings, the running cell's trap, the hooks."""

    def __init__(self, shell):
        self.shell = shell
        self.settings = Settings()
        self.active = None  # the trap entered for the running cell
        self.own_handler = False

    # -- cells ----------------------------------------------------------------
    def cell_of(self, filename: str) -> int | None:
        """The execution count of the cell compiled under this file name, or None."""
        named = getattr(self.shell.compile, "format_code_name", lambda _name: None)(filename)  # ("Cell", "In[14]")
        match = re.search(r"\d+", named[1]) if named else _INPUT_NAME.match(filename)
        return int(match.group(match.lastindex or 0)) if match else None

    def name_cells(self, report):
        """A copy of the report whose locations in cells read `cell N`."""
        from stabcheck.runtime.report import Location

        def named(loc: dict | None) -> dict | None:
            cell = self.cell_of(loc["filename"]) if loc else None
            return loc if cell is None else dict(loc, filename=f"cell {cell}")

        changes = {}
        if report.location is not None:
            changes["location"] = Location(**named(vars(report.location)))
        for field in ("forward", "detected"):
            value = getattr(report, field)
            if value and value.get("location"):
                changes[field] = dict(value, location=named(value["location"]))
        return dataclasses.replace(report, **changes)

    def show(self, report) -> None:
        view = ReportView(self.name_cells(report))
        try:
            from IPython.display import display

            display(view)
        except Exception:  # no display to show it on: the panel on stderr, never nothing
            print(repr(view), file=sys.stderr)

    def trap(self, settings: Settings):
        import stabcheck

        return stabcheck.trap(action=settings.action, per_op=settings.per_op, quiet=True, on_report=self.show)

    def pre_run_cell(self, info=None) -> None:
        raw = getattr(info, "raw_cell", None) or ""
        if not self.settings.enabled or self.active is not None or _CELL_MAGIC.match(raw):
            return
        try:
            if not _framework_ready(raw):
                return
            trap = self.trap(self.settings)
            trap.__enter__()
        except Exception as exc:
            print(f"stabcheck: this cell is not trapped: {type(exc).__name__}: {exc}", file=sys.stderr)
            return
        self.active = trap

    def post_run_cell(self, result=None) -> None:
        trap, self.active = self.active, None
        if trap is None:
            return
        error = getattr(result, "error_in_exec", None)
        try:
            trap.__exit__(type(error) if error is not None else None, error, None)
        except NonFiniteError as exc:
            # the end-of-cell check stopped (values checked only then: a GPU's, per-op flags): the cell
            # fails after all, as if its last line had raised, so that "run all" stops here too
            if result is not None and result.error_in_exec is None:
                result.error_in_exec = exc
                self.short_traceback(self.shell, type(exc), exc, None)
        except Exception as exc:
            print(f"stabcheck: {type(exc).__name__}: {exc}", file=sys.stderr)

    # -- the short traceback of a stop ------------------------------------------
    def short_traceback(self, shell, etype, value, tb, tb_offset=None):
        """IPython custom exception handler for NonFiniteError: the report says where and why, so the
        traceback keeps the cells' frames only (the trap's and the frameworks' frames are noise)."""
        frames = []
        while tb is not None:
            code = tb.tb_frame.f_code
            cell = self.cell_of(code.co_filename)
            if cell is not None:
                if frames and frames[-1][0] == (cell, "<module>") == (cell, code.co_name):
                    frames.pop()  # `%%stabcheck`: the cell's magic call, then its body
                frames.append(((cell, code.co_name), tb.tb_frame, tb.tb_lasti, tb.tb_lineno))
            tb = tb.tb_next
        short = None
        for _, frame, lasti, lineno in reversed(frames):
            short = types.TracebackType(short, frame, lasti, lineno)
        if short is None:  # raised after the cell's code (end-of-cell check): the error line alone
            shell._showtraceback(etype, value, shell.InteractiveTB.get_exception_only(etype, value))
        else:  # tb_offset=0: IPython's default skips the first frame, its own (dropped here already)
            shell.showtraceback((etype, value, short), tb_offset=0)

    # -- magics -----------------------------------------------------------------
    def magic(self, line: str, cell: str | None = None):
        from IPython.core.error import UsageError

        words = line.split()
        if cell is not None:
            unknown = [w for w in words if w not in _CELL_WORDS]
            if unknown:
                raise UsageError(f"%%stabcheck: unknown option {unknown[0]!r} (options: stop, warn, per-op)")
            return self.run_cell(_apply(Settings(), words), cell)
        if words[:1] == ["check"]:
            return self.check(words[1:])
        unknown = [w for w in words if w not in _WORDS]
        if unknown:
            raise UsageError(f"%stabcheck: unknown option {unknown[0]!r} "
                             "(on, off, stop, warn, per-op, no-per-op, check [PATH ...])")
        self.settings = _apply(self.settings, words)
        print(self.settings.describe())

    def run_cell(self, settings: Settings, cell: str):
        """`%%stabcheck`: the body runs under its own trap; line numbers are the cell's (the magic is
        line 1) and the value of a last expression is the cell's output, as in any cell."""
        shell = self.shell
        source = "\n" + shell.transform_cell(cell)
        name = shell.compile.cache(source, shell.execution_count)
        tree = ast.parse(source, filename=name)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        namespace = (shell.user_global_ns, shell.user_ns)
        with self.trap(settings):
            exec(compile(tree, name, "exec", dont_inherit=True), *namespace)
            if last is not None:
                return eval(compile(last, name, "eval", dont_inherit=True), *namespace)
        return None

    def check(self, args: list[str]) -> None:
        """Static findings: of files with the CLI's options, or of the cells run so far."""
        if args:
            from stabcheck.cli import main

            try:
                main(["check", *args])
            except SystemExit:  # argparse's usage errors: the message is printed already
                pass
            return
        for line in check_history(self.shell.history_manager.input_hist_raw):
            print(line)

    # -- load / unload ----------------------------------------------------------
    def register(self) -> None:
        shell = self.shell
        shell.events.register("pre_run_cell", self.pre_run_cell)
        shell.events.register("post_run_cell", self.post_run_cell)
        shell.register_magic_function(self.magic, "line_cell", "stabcheck")
        if not shell.custom_exceptions:  # another extension's handler stays
            shell.set_custom_exc((NonFiniteError,), self.short_traceback)
            self.own_handler = True

    def unregister(self) -> None:
        shell = self.shell
        for event, callback in (("pre_run_cell", self.pre_run_cell), ("post_run_cell", self.post_run_cell)):
            try:
                shell.events.unregister(event, callback)
            except ValueError:
                pass
        for kind in ("line", "cell"):
            shell.magics_manager.magics[kind].pop("stabcheck", None)
        if self.own_handler:
            shell.set_custom_exc((), None)
        if self.active is not None:
            self.post_run_cell()


def check_history(inputs: list[str]) -> list[str]:
    """`%stabcheck check`: the cells run so far (`In`, indexed by execution count) checked like a
    notebook's cells; a cell run again unchanged counts once, at its last run."""
    from pathlib import Path

    from stabcheck import config
    from stabcheck.notebook import check_notebook

    cells = list(inputs[1:])
    last = {source: i for i, source in enumerate(cells)}
    cells = [source if last[source] == i else "" for i, source in enumerate(cells)]
    try:
        settings = config.load(None, Path.cwd())
    except config.ConfigError as exc:
        return [f"stabcheck: error: {exc}"]
    doc = {"cells": [{"cell_type": "code", "source": source} for source in cells], "metadata": {}}
    diags = check_notebook(json.dumps(doc).encode(), "In", settings.enabled())
    lines = [f"cell {d.cell}:{d.row}:{d.col}: {d.code} {d.message}" for d in sorted(diags, key=lambda d: d.sort_key())]
    n = len(diags)
    lines.append(f"Found {n} problem{'s' * (n != 1)} in the cells run so far." if n else "All checks passed!")
    return lines


def load(shell) -> None:
    if id(shell) in _extensions:
        return
    extension = Extension(shell)
    extension.register()
    _extensions[id(shell)] = extension
    print(extension.settings.describe())


def unload(shell) -> None:
    extension = _extensions.pop(id(shell), None)
    if extension is not None:
        extension.unregister()
