"""Command line: `stabcheck check | explain | rules | run`.

Exit codes follow ruff: 0 clean, 1 findings, 2 usage, configuration or
internal error. `run` hands its whole argument list to the runtime trap so
that the user's script flags are never parsed here.
"""

from __future__ import annotations

import argparse
import os
import sys

from stabcheck import __version__

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
FORMATS = ("text", "full", "json", "sarif", "github")

CHECK_DESCRIPTION = """\
Lint Python files and Jupyter notebooks for numerical-stability bugs (static:
nothing is imported or run). Directories are walked for *.py and *.ipynb,
skipping excluded paths and what .gitignore files exclude; `-` reads one file
from standard input. Configuration: [tool.stabcheck] in the nearest
pyproject.toml."""

CHECK_EPILOG = """\
exit status:
  0  no findings (or --exit-zero)
  1  findings were reported
  2  usage or configuration error, a path that does not exist, or an internal error"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"stabcheck: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stabcheck",
        description="Find the numerical-stability bugs that make training produce NaN or Inf.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"stabcheck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser("check", help="lint Python files and notebooks (static)", description=CHECK_DESCRIPTION,
                           epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("paths", nargs="*", default=None, metavar="PATH",
                       help="files or directories (default: .); - reads standard input")
    check.add_argument("--select", metavar="CODES", help="comma-separated codes or prefixes to enable (e.g. STB0,STB101); DEFAULT: every rule's default tier "
                       "(the default); ALL, a code or a prefix also enable the rule's opt-in shapes")
    check.add_argument("--ignore", metavar="CODES", help="comma-separated codes or prefixes to disable")
    check.add_argument("--extend-select", metavar="CODES", help="codes or prefixes to enable on top of the configured ones")
    check.add_argument("--output-format", choices=FORMATS, default=None,
                       help="report format (default: text; full: with the source line and a caret; "
                            "sarif for code scanning, github for Actions annotations)")
    check.add_argument("-o", "--output-file", metavar="PATH", help="write the report to this file instead of standard output")
    check.add_argument("--stdin-filename", metavar="PATH",
                       help="with -: the name the input is reported under (also picks the configuration and per-file-ignores)")
    check.add_argument("--exit-zero", action="store_true", help="exit 0 even when findings are reported")
    check.add_argument("--fix", action="store_true", help="apply the safe fixes and report what remains")
    check.add_argument("--unsafe-fixes", action="store_true", help="with --fix or --diff: also apply the unsafe fixes")
    check.add_argument("--diff", action="store_true", help="print the fixes as a unified diff instead of writing them")
    check.add_argument("--config", metavar="PYPROJECT", help="read [tool.stabcheck] from this file instead of the nearest pyproject.toml")
    check.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    check.add_argument("-j", "--jobs", type=int, default=None, metavar="N", help="worker processes (default: all cores; 1 = no pool)")
    check.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    check.add_argument("--statistics", action="store_true",
                       help="one line per rule with its count instead of each finding (json: a list of {code, name, count, fixable})")
    check.add_argument("--no-cache", action="store_true", help="neither read nor write .stabcheck_cache/")
    check.add_argument("--add-noqa", action="store_true", help="append `# noqa: CODES` to every line with a finding, then exit")

    explain = sub.add_parser("explain", help="print a rule's catalog page", description="Print a rule's catalog page.")
    explain.add_argument("rule", metavar="CODE_OR_SLUG")

    sub.add_parser("rules", help="list the rules")
    sub.add_parser("run", help="run a training script under the NaN/Inf trap (stabcheck run -h)", add_help=False)
    parser.commands = sub.choices  # for errors in a command's own arguments
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        from stabcheck.runtime.cli import main as run_main

        return run_main(argv[1:])
    for stream in (sys.stdout, sys.stderr):  # a name that is not UTF-8 is printed escaped, not a traceback
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    parser = _build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `check --frobnicate`: the usage of `check`, not the top level's
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "check":
            from stabcheck.commands import run_check

            return run_check(args)
        if args.command == "explain":
            from stabcheck.commands import run_explain

            return run_explain(args.rule)
        if args.command == "rules":
            from stabcheck.commands import run_rules

            return run_rules()
    except KeyboardInterrupt:
        print("stabcheck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `stabcheck check | head`: the reader went away; not our error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FINDINGS
    parser.print_help(sys.stderr)
    return EXIT_ERROR
