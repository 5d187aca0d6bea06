"""What `stabcheck check`, `explain` and `rules` do, behind the CLI parser."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from stabcheck.cli import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS


def _error(message: str) -> None:
    print(f"stabcheck: error: {message}", file=sys.stderr)


def _use_color(args) -> bool:
    return (
        not args.no_color
        and args.output_format in (None, "text")
        and "NO_COLOR" not in os.environ
        and sys.stdout.isatty()
    )


def _conflict(args) -> str | None:
    """Why these options cannot go together, if they cannot."""
    paths = args.paths or []
    if "-" in paths and len(paths) > 1:
        return "`-` (standard input) cannot be combined with other paths"
    if args.stdin_filename and paths and paths != ["-"]:
        return "--stdin-filename names standard input: give `-` or no path"
    if args.add_noqa and (args.diff or args.fix):
        return "--add-noqa cannot be combined with --fix or --diff"
    if (paths == ["-"] or args.stdin_filename) and (args.fix or args.diff or args.add_noqa):
        return "--fix, --diff and --add-noqa need files, not standard input"
    if args.statistics and (args.output_format or "text") not in ("text", "json"):
        return "--statistics prints text or json"
    if args.jobs is not None and args.jobs < 1:
        return "--jobs must be at least 1"
    return None


def run_check(args) -> int:
    from stabcheck import config
    from stabcheck.cache import Cache, cache_dir
    from stabcheck.checks import INTERNAL_ERROR
    from stabcheck.diagnostics import Diagnostic
    from stabcheck.engine import FileJob, check_jobs
    from stabcheck.files import PerFileIgnores, discover

    problem = _conflict(args)
    if problem:
        _error(problem)
        return EXIT_ERROR
    stdin = args.paths == ["-"] or bool(args.stdin_filename)
    paths = [args.stdin_filename or "-"] if stdin else args.paths or ["."]
    try:
        if args.isolated:
            settings = config.Settings(root=Path.cwd())
        else:
            explicit = Path(args.config) if args.config else None
            if explicit is not None and not os.path.lexists(explicit):
                raise config.ConfigError(f"--config {args.config}: no such file")
            settings = config.load(explicit, Path.cwd() if paths == ["-"] else config.common_start(paths))
        if args.select:
            settings.select = config.parse_selectors(args.select, "--select")
        if args.extend_select:
            settings.extend_select += config.parse_selectors(args.extend_select, "--extend-select")
        if args.ignore:
            settings.ignore += config.parse_selectors(args.ignore, "--ignore")
    except config.ConfigError as exc:
        _error(str(exc))
        return EXIT_ERROR

    per_file = PerFileIgnores(settings)
    if stdin:
        missing = []
        extra = per_file.codes_for(paths[0])
        diags = _check_stdin(paths[0], settings.enabled(extra), settings.opt_in(extra))
    else:
        files, missing, unreadable = discover(paths, settings)
        if not files and not missing and not unreadable:
            print("stabcheck: warning: no Python files found under the given paths", file=sys.stderr)
        enabled_by_ignores: dict[tuple[str, ...], tuple[frozenset[str], frozenset[str]]] = {}
        jobs = []
        for path in files:
            extra = tuple(per_file.codes_for(path))
            if extra not in enabled_by_ignores:
                enabled_by_ignores[extra] = settings.enabled(list(extra)), settings.opt_in(list(extra))
            codes, opt_in = enabled_by_ignores[extra]
            jobs.append(FileJob(path, codes, opt_in))
        cache = None if args.no_cache or os.environ.get("STABCHECK_NO_CACHE") else Cache(cache_dir(settings))
        diags = check_jobs(jobs, args.jobs, cache) + _path_problems(missing, unreadable, settings)
        diags.sort(key=Diagnostic.sort_key)

    if args.add_noqa or args.diff:  # no report follows: say here what was not checked
        for given in missing:
            _error(f"{given}: no such file or directory")
    if args.add_noqa:
        from stabcheck import noqa_tools

        noqa_tools.report(*noqa_tools.add_noqa(diags), sys.stderr)
        return EXIT_ERROR if missing else EXIT_CLEAN

    fixed = 0
    if args.fix or args.diff:
        from stabcheck.autofix import fix_files

        before = len(diags)
        diags, fixed = fix_files(diags, jobs, args.unsafe_fixes, args.diff, sys.stdout, _roots(paths))
        if args.diff:
            sys.stdout.flush()
            print(f"Would fix {fixed} problem{'s' * (fixed != 1)} ({before} found).", file=sys.stderr)
            return EXIT_FINDINGS if fixed else EXIT_CLEAN
    from stabcheck.autofix import visible

    diags, hidden = visible(diags, args.unsafe_fixes)
    if not _write_report(args, diags, fixed, hidden):
        return EXIT_ERROR

    if missing or any(d.code == INTERNAL_ERROR.code for d in diags):
        return EXIT_ERROR
    if diags and not args.exit_zero:
        return EXIT_FINDINGS
    return EXIT_CLEAN


def _check_stdin(name: str, codes: frozenset[str], opt_in: frozenset[str]) -> list:
    """`check -`: one file read from standard input, reported as `name`."""
    from stabcheck import engine
    from stabcheck.filebytes import LIMIT
    from stabcheck.report.locations import STDIN

    data = sys.stdin.buffer.read(LIMIT + 1)
    STDIN[name] = data  # the report shows lines and fixes from this, not from a file of that name
    if len(data) > LIMIT:
        from stabcheck.checks import IO_ERROR
        from stabcheck.diagnostics import Diagnostic

        why = f"standard input too large (stabcheck reads at most {LIMIT // 2**20} MiB)"
        return [Diagnostic(IO_ERROR.code, why, name, 1, 1, 1, 1)] if IO_ERROR.code in codes else []
    return engine.check_data(engine.FileJob(name, codes, opt_in), data)


def _write_report(args, diags: list, fixed: int, hidden: int) -> bool:
    """The report, on standard output or (written whole, atomically) in --output-file."""
    import io

    from stabcheck.report import STATISTICS, WRITERS

    fmt = args.output_format or "text"
    out = io.StringIO() if args.output_file else sys.stdout
    writer = STATISTICS[fmt] if args.statistics else WRITERS[fmt]
    writer(diags, out, color=not args.output_file and _use_color(args))
    if fmt in ("text", "full"):
        fixable = sum(1 for d in diags if d.fix is not None)
        if fixed:
            print(f"Fixed {fixed} problem{'s' * (fixed != 1)}.", file=out)
        if fixable:
            note = f" ({hidden} more with --unsafe-fixes)" if hidden else ""
            print(f"[*] {fixable} fixable with --fix{note}.", file=out)
        elif hidden:
            print(f"{hidden} fix{'es' * (hidden != 1)} available with --fix --unsafe-fixes.", file=out)
    if not args.output_file:
        sys.stdout.flush()
        return True
    try:
        _write_atomically(args.output_file, out.getvalue())
    except OSError as exc:
        _error(f"--output-file {args.output_file}: {exc.strerror or exc}")
        return False
    return True


def _write_atomically(path: str, text: str) -> None:
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".stabcheck-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _path_problems(missing: list[str], unreadable: list[tuple[str, str]], settings) -> list:
    """STB902 findings for what could not be looked at: a path named on the
    command line that does not exist (always shown, exit 2, as ruff's E902)
    and a directory that could not be listed."""
    from stabcheck.checks import IO_ERROR
    from stabcheck.diagnostics import Diagnostic

    out = [Diagnostic(IO_ERROR.code, "no such file or directory", given, 1, 1, 1, 1) for given in missing]
    if IO_ERROR.code in settings.enabled():
        out += [Diagnostic(IO_ERROR.code, f"cannot read directory: {why}", path, 1, 1, 1, 1) for path, why in unreadable]
    return out


def run_explain(name: str) -> int:
    from stabcheck.catalog import pages
    from stabcheck.checks import BY_SLUG, RULES

    rule = RULES.get(name.upper()) or BY_SLUG.get(name.lower())
    if rule is None:
        _error(f"unknown rule {name!r} (see `stabcheck rules`)")
        return EXIT_ERROR
    page = pages().get(rule.code)
    if page is None:
        _error(f"no catalog page for {rule.code}: this installation is missing its rule catalog")
        return EXIT_ERROR
    sys.stdout.write(page.read_text(encoding="utf-8"))
    return EXIT_CLEAN


def run_rules() -> int:
    from stabcheck.checks import RULES

    width = max(len(r.slug) for r in RULES.values())
    for rule in RULES.values():
        print(f"{rule.code}  {rule.slug:<{width}}  {rule.summary}")
    return EXIT_CLEAN


def _roots(paths: list[str]) -> list[str]:
    """The checked tree, as real paths: `--fix` writes nothing outside it."""
    return [os.path.realpath(p if os.path.isdir(p) else os.path.dirname(p) or ".") for p in paths]
