"""Run a user's script or module exactly the way `python` would, under the trap.

Same `__main__` (with `__file__`, so `if __name__ == "__main__":` runs and
classes pickle as `__main__.X`), same `sys.argv` and `sys.path[0]`, the
script's own stdout/stderr, its exit status; an uncaught exception prints its
normal traceback (stabcheck's and runpy's frames removed) and exits 1. Spawned
children (multiprocessing spawn, DataLoader workers, torch.multiprocessing)
re-import the script as `__mp_main__` as usual and get the trap through the
STABCHECK_RUNTIME environment variable.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import io
import os
import runpy
import signal
import sys
import threading
import types
import zipfile

import stabcheck
from stabcheck.runtime import api, incident
from stabcheck.runtime.config import ENV_VAR, EXIT_TRAPPED, NonFiniteError, TrapConfig
from stabcheck.runtime.rerun import RerunPlan

_OWN_DIR = os.path.dirname(stabcheck.__file__) + os.sep


def _is_ours(filename: str) -> bool:
    return filename.startswith(_OWN_DIR) or filename in (runpy.__file__, "<frozen runpy>")


def _strip(tb):
    """The traceback without stabcheck's and runpy's frames."""
    entries = []
    while tb is not None:
        if not _is_ours(tb.tb_frame.f_code.co_filename):
            entries.append(tb)
        tb = tb.tb_next
    new = None
    for entry in reversed(entries):
        new = types.TracebackType(new, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return new


def _clean(exc: BaseException, seen=None) -> None:
    seen = seen if seen is not None else set()
    if exc is None or id(exc) in seen:
        return
    seen.add(id(exc))
    exc.__traceback__ = _strip(exc.__traceback__)
    _clean(exc.__cause__, seen)
    _clean(exc.__context__, seen)


def _exit_code(code) -> int:
    """SystemExit.code -> status, as the interpreter does."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _patch_spawn() -> None:
    """Spawned children run `python -c 'from multiprocessing.spawn import spawn_main; ...'`;
    start the trap there before the child re-imports the script."""
    import multiprocessing.spawn as spawn

    if getattr(spawn.get_command_line, "_stabcheck", False):
        return
    original = spawn.get_command_line

    def get_command_line(**kwds):
        cmd = original(**kwds)
        if "-c" in cmd:
            i = cmd.index("-c") + 1
            cmd = list(cmd)
            cmd[i] = ("try:\n import stabcheck.runtime.api as _s; _s.process_startup()\n"
                      "except Exception:\n pass\n" + cmd[i])
        return cmd

    get_command_line._stabcheck = True
    spawn.get_command_line = get_command_line


def _exec_script(path: str) -> None:
    """Execute a source file as __main__ the way the interpreter does (argv[0] stays as typed)."""
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    main.__spec__ = None
    main.__package__ = None
    main.__cached__ = None
    sys.modules["__main__"] = main
    with io.open_code(path) as fh:
        source = fh.read()
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def run(config: TrapConfig, target: str, args: list[str], module: bool = False, rerun: bool = False) -> int:
    """Run `target` (a path, or a module name with module=True) with `args`; return the exit status.
    rerun: a value the replay cannot localize is localized by running the script again (rerun.py)."""
    if not module:
        path = os.path.abspath(target)
        if not os.path.exists(path):
            print(f"stabcheck run: can't open file {path!r}: [Errno 2] No such file or directory", file=sys.stderr)
            return 2
    plan = RerunPlan(config, target, args, module) if rerun else None  # before the script changes anything
    incident.defer = plan.defer if plan is not None else None
    os.environ[ENV_VAR] = config.to_env()
    _patch_spawn()
    sys.argv = [target, *args]
    if not sys.flags.safe_path:
        entry = os.getcwd() if module else os.path.dirname(os.path.realpath(target))
        if sys.path:
            sys.path[0] = entry
        else:
            sys.path.insert(0, entry)
    api.start(config)
    threading.excepthook = _thread_excepthook
    status = 0
    stopped = None  # the message of the trap's NonFiniteError, printed last
    try:
        try:
            if module:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            elif os.path.isfile(path) and not zipfile.is_zipfile(path):
                _exec_script(path)
            else:  # a directory or zip file with __main__.py
                runpy.run_path(target, run_name="__main__")
        finally:
            api.stop(final_check=sys.exc_info()[0] is None)
    except SystemExit as exc:
        status = _exit_code(exc.code)
    except NonFiniteError as exc:
        status = EXIT_TRAPPED
        stopped = str(exc)
    except ImportError as exc:
        if module and _strip(exc.__traceback__) is None:  # raised by runpy itself: no such module
            print(f"stabcheck run: {exc}", file=sys.stderr)
            return 1
        status = _report_exception(exc)
    except KeyboardInterrupt as exc:
        _report_exception(exc)
        status = _SIGINT
    except BaseException as exc:  # noqa: BLE001 - the user's uncaught exception
        status = _report_exception(exc)
    trap = api.last_stopped()
    if status == 0 and trap is not None:
        status = EXIT_TRAPPED  # the script swallowed the trap's exception: the run still failed
    incident.defer = None
    final = _finish_rerun(plan)
    if stopped is not None:
        if final is not None:
            stopped = f"stabcheck: {final.headline()}"
        print(f"{stopped} -- run stopped (exit status {EXIT_TRAPPED})", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if status == _SIGINT:
        status = _die_of_sigint()
    return status


_SIGINT = -signal.SIGINT


def _finish_rerun(plan):
    """Re-run the script for a report the replay could not localize (the final report, or None)."""
    if plan is None:
        return None
    try:
        return plan.finish()
    except Exception as exc:  # never a traceback of stabcheck's own
        print(f"stabcheck: the re-run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _die_of_sigint() -> int:
    """An uncaught KeyboardInterrupt: python dies of SIGINT (a shell sees 130, a parent -2); do the same."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except (OSError, ValueError, AttributeError):
        pass
    return 130  # where no signal could be raised


_ORIG_THREAD_HOOK = threading.excepthook


def _thread_excepthook(args) -> None:
    """A training thread stopped by the trap: one line (the report is printed already), not a traceback."""
    if args.exc_type is not None and issubclass(args.exc_type, NonFiniteError):
        name = args.thread.name if args.thread is not None else "a thread"
        print(f"stabcheck: {name} stopped: {args.exc_value}", file=sys.stderr)
        return
    _ORIG_THREAD_HOOK(args)


def _report_exception(exc: BaseException) -> int:
    inside = _raised_inside(exc)
    _clean(exc)
    try:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    except Exception:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    if inside is not None:  # its frames are stripped with the trap's others: say whose error it is
        print(f"stabcheck: this error was raised inside stabcheck ({inside}), not by the script: a bug of "
              "stabcheck's; the script runs without it under plain python (please report it)", file=sys.stderr)
    return 1


def _raised_inside(exc: BaseException) -> str | None:
    """`file:line in function` of stabcheck's own frame that raised `exc`, or None (the script's, a
    library's, or runpy's: no such module)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    if not code.co_filename.startswith(_OWN_DIR):
        return None
    return f"{os.path.relpath(code.co_filename, os.path.dirname(_OWN_DIR.rstrip(os.sep)))}:{tb.tb_lineno} in {code.co_name}"
