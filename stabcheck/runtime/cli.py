"""`stabcheck run [options] script.py [args...]` / `stabcheck run [options] -m module [args...]`.

Only the options before the script (or before `-m MODULE`) are stabcheck's;
everything after belongs to the script and is never parsed here.
"""

from __future__ import annotations

import argparse
import os
import sys

from stabcheck.runtime.config import EXIT_TRAPPED

USAGE = ("stabcheck run [--action stop|warn] [--report-json PATH] [--per-op] [--no-rerun] [--quiet] "
         "(script.py | -m module) [args ...]")

EPILOG = f"""\
The script runs as under `python script.py args...` (same __main__, sys.argv,
sys.path[0], output and exit status) until the first NaN/Inf in a loss, in a
tensor passed to backward(), or in a gradient before optimizer.step(). The
trap then replays the failing step with every op checked and reports the op
that produced the value: op, file:line, phase, module, input statistics, hint.
When the replay cannot reproduce the value, the script is run again (same
argv, cwd, environment) up to that step with every op checked, its output
hidden, and the report names what that run found (--no-rerun: report as is).
TensorFlow/Keras (imported only if the script does): the loss and gradients of
GradientTape.gradient are checked (eager, tf.function, model.fit); --per-op
applies to PyTorch only. JAX (likewise): jax_debug_nans detects a NaN in the
outputs of a jitted call or an eager op, and the call is re-evaluated primitive
by primitive to name the op that made it.

exit status: the script's own; {EXIT_TRAPPED} when the trap stopped the run; 2 for a
usage error or a missing script.
Under torchrun each rank reports its RANK; with --report-json and WORLD_SIZE > 1
each rank writes PATH with `.rankN` before the suffix (or put {{rank}} in PATH).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(2, f"stabcheck run: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stabcheck run", usage=USAGE, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Run a training script under the NaN/Inf trap.")
    p.add_argument("--action", choices=("stop", "warn"), default="stop",
                   help=f"stop: stop the run after the report (exit status {EXIT_TRAPPED}); warn: report and continue")
    p.add_argument("--report-json", metavar="PATH", help="also write the report as JSON to PATH")
    p.add_argument("--per-op", action="store_true",
                   help="check every op's output as it runs (deferred device flags, one sync per step; slower)")
    p.add_argument("--no-rerun", action="store_true",
                   help="when the replay cannot localize a value, report it as is instead of re-running the script "
                        "to that step with per-op checks")
    p.add_argument("--quiet", action="store_true", help="no report panel on stderr (the JSON is still written)")
    p.add_argument("--rerun-until", type=int, metavar="STEP", help=argparse.SUPPRESS)  # the re-run itself (rerun.py)
    return p


def split(argv: list[str]) -> tuple[list[str], str | None, bool, list[str]]:
    """(stabcheck options, target, is_module, script args)."""
    takes_value = {"--action", "--report-json", "--rerun-until"}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], (argv[i + 1] if i + 1 < len(argv) else None), False, argv[i + 2:]
        if arg == "-m":
            return argv[:i], (argv[i + 1] if i + 1 < len(argv) else None), True, argv[i + 2:]
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            return argv[:i], arg[2:], True, argv[i + 1:]
        if not arg.startswith("-") or arg == "-":
            return argv[:i], arg, False, argv[i + 1:]
        if arg in takes_value:
            i += 2
        else:
            i += 1
    return argv, None, False, []


def main(argv: list[str]) -> int:
    options, target, module, args = split(list(argv))
    parser = _parser()
    ns = parser.parse_args(options)
    if target is None:
        parser.error("-m needs a module name" if module else "no script given (stabcheck run script.py [args ...])")
    if target == "-":
        parser.error("reading the script from stdin is not supported")
    from stabcheck.runtime.config import TrapConfig
    from stabcheck.runtime.rerun import RERUN_ENV
    from stabcheck.runtime.runner import run

    report_json = os.path.abspath(ns.report_json) if ns.report_json else None  # the script may chdir
    config = TrapConfig(action=ns.action, report_json=report_json, per_op=ns.per_op, quiet=ns.quiet)
    if ns.rerun_until is not None:  # the re-run: stop at its report, quiet, no re-run of its own
        config = TrapConfig(action="stop", report_json=report_json, per_op=ns.per_op, quiet=True,
                            rerun_until=ns.rerun_until)
    rerun = not (ns.no_rerun or ns.per_op or os.environ.get(RERUN_ENV) or ns.rerun_until is not None)
    return run(config, target, args, module=module, rerun=rerun)
