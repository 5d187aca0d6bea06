"""When the replay cannot localize a value, `stabcheck run` runs the script again, with the same argv,
cwd, environment and interpreter flags, and checks every op of the failing step.

Parent (RerunPlan, made by the runner for its own process only; never by `stabcheck.trap()`): the
trap hands it its first report when no producer was found. It prints a one-line notice instead of the
panel, and once the script has ended it runs the child, waits for it (time-limited), and prints one
report: the child's, marked `"localized": "rerun"`, or the first one with what the re-run saw.

Child (`--rerun-until N`, a hidden option; RERUN_ENV in its environment): the cheap trap up to step
N, per-op checks from step N on (TorchTrap.enable_per_op), its report written to a temporary JSON
file. It ends itself with os._exit at its report or once step N is over: the script's `finally`
blocks, atexit handlers and checkpoint writes of the first run are not repeated for nothing. Its
output is discarded (stderr kept in a file for the reason of a failure).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

from stabcheck.runtime import hints
from stabcheck.runtime.config import ENV_VAR, TrapConfig
from stabcheck.runtime.report import TrapReport, render, write_json

#: In the re-run's environment: a re-run never re-runs, and a script can test it to skip side effects.
RERUN_ENV = "STABCHECK_RERUN"
#: A value met later than this into the run is not re-run (the re-run would take as long again).
RERUN_WITHIN_S = 600
#: The re-run's time limit: this many times what the first run took to the value, plus start-up.
LIMIT_FACTOR = 3
LIMIT_SLACK_S = 60
#: Set under torchrun / torch.distributed launchers: the ranks would have to re-run together.
DISTRIBUTED_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def exit_now(status: int) -> None:
    """End a re-run at once: no `finally`, atexit or checkpoint code of the script runs again."""
    os._exit(status)


def _stdin_source():
    """What the re-run reads as stdin, or a str: why there can be no re-run. Decided before the
    script runs (a pipe it reads is gone after). A terminal is not handed on: the re-run's output
    is hidden, so it could not prompt."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:  # stdin closed
        return subprocess.DEVNULL
    if stat.S_ISREG(mode):
        return 0  # `< data.txt`: the same file, rewound
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "stdin is a pipe: a re-run cannot read the same input"
    return subprocess.DEVNULL  # a terminal or /dev/null


def _distributed() -> bool:
    if any(os.environ.get(name) for name in DISTRIBUTED_ENV):
        return True
    dist = sys.modules.get("torch.distributed")
    try:
        return bool(dist is not None and dist.is_available() and dist.is_initialized())
    except Exception:
        return False


class RerunPlan:
    def __init__(self, config: TrapConfig, target: str, args: list[str], module: bool):
        self.config = config
        self.command = ["-m", target] if module else ["--", target]
        self.args = list(args)
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.cwd = os.getcwd()  # the script may chdir or edit os.environ: the re-run starts as the run did
        self.env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
        self.env[RERUN_ENV] = "1"
        self.stdin = _stdin_source()
        self.report: TrapReport | None = None  # the first report, deferred
        self.elapsed = 0.0  # seconds from the start to that report

    # -- in the run, at the first report --------------------------------------
    def defer(self, trap, report: TrapReport) -> bool:
        """The trap's first report, before it is printed: True when the re-run will print it later."""
        if os.getpid() != self.pid or report.framework != "torch" or report.localized != "no" \
                or report.step is None:
            return False
        elapsed = time.monotonic() - self.started
        reason = self._why_not(trap, elapsed)
        if reason:
            report.rerun = {"outcome": "skipped", "step": report.step, "seconds": None,
                            "detail": f"not re-run: {reason}", "first": None}
            return False
        self.report, self.elapsed = report, elapsed
        if not self.config.quiet:
            when = ("to find its producer" if self.config.action == "stop"
                    else "when this run ends; the run goes on")
            print(f"stabcheck: {report.headline()} -- re-running the script to step {report.step} with per-op "
                  f"checks {when} (--no-rerun: skip)", file=sys.stderr, flush=True)
        return True

    def _why_not(self, trap, elapsed: float) -> str | None:
        if isinstance(self.stdin, str):
            return self.stdin
        if _distributed():
            return "a distributed run: every rank would have to re-run together"
        if getattr(trap, "thread", None) not in (None, threading.get_ident()):
            name = threading.current_thread().name
            return (f"detected in {name}, a thread other than the one that started the trap; "
                    "per-op checks see only that one")
        if elapsed > RERUN_WITHIN_S:
            return f"the value appeared {elapsed / 60:.0f} min into the run; a re-run would take as long again"
        return None

    # -- after the run --------------------------------------------------------
    def finish(self) -> TrapReport | None:
        """Re-run the script for the deferred report; print and write the final report; None if none."""
        first = self.report
        if first is None:
            return None
        self.report = None
        _release_memory()
        step = first.step
        limit = LIMIT_FACTOR * self.elapsed + LIMIT_SLACK_S
        started = time.monotonic()
        outcome, child, detail = self._run_child(step, limit)
        seconds = round(time.monotonic() - started, 1)
        final = _merge(first, outcome, child, detail, step, seconds, limit, self.elapsed)
        if self.config.report_json:
            try:
                write_json(final, self.config.report_json)
            except OSError as exc:
                print(f"stabcheck: cannot write {self.config.report_json}: {exc}", file=sys.stderr)
        if not self.config.quiet:
            render(final)
        return final

    def _run_child(self, step: int, limit: float) -> tuple[str, dict | None, str]:
        """(outcome, the child's report or None, detail). Outcomes: "found" (a report), "none" (no
        value met by step `step`), "failed", "timed out", "interrupted"."""
        workdir = tempfile.mkdtemp(prefix="stabcheck-rerun-")
        out = os.path.join(workdir, "report.json")
        err_path = os.path.join(workdir, "stderr.txt")
        own = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        # appended, not prepended: the script's own sys.path comes first, as in the first run
        boot = (f"import sys; sys.path.append({own!r}); from stabcheck.runtime.cli import main; "
                "sys.argv[0] = 'stabcheck run'; sys.exit(main(sys.argv[1:]))")
        cmd = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", boot,
               "--quiet", "--report-json", out, "--rerun-until", str(step), *self.command, *self.args]
        stdin = self.stdin
        if stdin == 0:
            try:
                os.lseek(0, 0, os.SEEK_SET)
            except OSError:
                stdin = subprocess.DEVNULL
        proc = None
        try:
            with open(err_path, "wb") as err:
                try:
                    proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdin=stdin, stdout=subprocess.DEVNULL,
                                            stderr=err, start_new_session=True)
                except OSError as exc:
                    return "failed", None, f"could not start ({exc})"
                try:
                    status = proc.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    return "timed out", None, ""
                except KeyboardInterrupt:
                    return "interrupted", None, ""
            try:
                with open(out, encoding="utf-8") as fh:
                    return "found", json.load(fh), ""
            except (OSError, ValueError):
                pass
            if status == 0:
                return "none", None, ""
            return "failed", None, _failure(status, err_path)
        finally:
            if proc is not None:
                try:  # the child and what it started (DataLoader workers)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (OSError, AttributeError):
                    pass
                proc.wait()
            for name in (out, err_path):
                try:
                    os.unlink(name)
                except OSError:
                    pass
            try:
                os.rmdir(workdir)
            except OSError:
                pass


def _release_memory() -> None:
    """The first run is over: give back what it can (the re-run needs the same accelerator memory)."""
    gc.collect()
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _failure(status: int, err_path: str) -> str:
    """`status 1: RuntimeError: ...` from the last line of the child's stderr."""
    try:
        with open(err_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    why = f"status {status}" if status >= 0 else f"signal {-status}"
    return f"{why}: {lines[-1][:200]}" if lines else why


def _merge(first: TrapReport, outcome: str, child: dict | None, detail: str, step: int, seconds: float,
           limit: float, elapsed: float) -> TrapReport:
    """The report to show: the child's when it found the producer, else the first one, saying why not."""
    record = {"outcome": None, "step": step, "seconds": seconds, "detail": "", "first": first.detected.get("message")}
    ran = f"re-ran the script to step {step} with per-op checks"
    met = child.get("step") if outcome == "found" else None
    if met is not None and met > step:
        outcome = "none"  # it went past the step (the limit is checked at step ends only)
    if outcome == "found" and child.get("localized") != "no":
        final = TrapReport.from_dict(child)
        final.status, final.localized = first.status, "rerun"
        record.update(outcome="localized", detail=f"{ran}, as a replay of the step could not localize the value"
                      if met == step else
                      f"re-ran the script with per-op checks: the first non-finite value is at step {met}, "
                      f"before the one detected at step {step}")
        final.rerun = record
        return final
    final = first
    if outcome == "found" and met != step:  # checked from step N on only: it is not the same run
        record.update(outcome="not reproduced", detail=f"{ran}: it met a non-finite value at step {met} already")
        final.hint = hints.RERUN_MISSED_HINT
    elif outcome == "found":  # the value came back, and per-op checks did not see its producer either
        record.update(outcome="not localized", detail=f"{ran}: the value came back, no checked op produced it")
        final.hint = hints.RERUN_UNSEEN_HINT
    elif outcome == "none":
        record.update(outcome="not reproduced", detail=f"{ran}: no non-finite value this time")
        final.hint = hints.RERUN_MISSED_HINT
    elif outcome == "timed out":
        record.update(outcome="timed out", detail=f"{ran}: stopped at the time limit, {limit:.0f} s "
                      f"({LIMIT_FACTOR}x the {elapsed:.0f} s the run took to the value, plus {LIMIT_SLACK_S} s)")
    elif outcome == "interrupted":
        record.update(outcome="interrupted", detail=f"{ran}: interrupted")
    else:
        record.update(outcome="failed", detail=f"{ran}: it failed ({detail})")
    final.rerun = record
    return final
