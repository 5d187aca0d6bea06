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


def run_check(args) -> int:
    from stabcheck import config
    from stabcheck.cache import Cache, cache_dir
    from stabcheck.checks import INTERNAL_ERROR
    from stabcheck.engine import FileJob, check_jobs
    from stabcheck.files import PerFileIgnores, discover
    from stabcheck.report import WRITERS, write_statistics

    paths = args.paths or ["."]
    try:
        if args.isolated:
            settings = config.Settings(root=Path.cwd())
        else:
            explicit = Path(args.config) if args.config else None
            if explicit is not None and not explicit.is_file():
                raise config.ConfigError(f"--config {args.config}: no such file")
            settings = config.load(explicit, config.common_start(paths))
        if args.select:
            settings.select = config.parse_selectors(args.select, "--select")
        if args.extend_select:
            settings.extend_select += config.parse_selectors(args.extend_select, "--extend-select")
        if args.ignore:
            settings.ignore += config.parse_selectors(args.ignore, "--ignore")
    except config.ConfigError as exc:
        _error(str(exc))
        return EXIT_ERROR
    if args.jobs is not None and args.jobs < 1:
        _error("--jobs must be at least 1")
        return EXIT_ERROR

    files, missing = discover(paths, settings)
    for message in missing:
        _error(message)
    if not files and not missing:
        print("stabcheck: warning: no Python files found under the given paths", file=sys.stderr)

    per_file = PerFileIgnores(settings)
    enabled_by_ignores: dict[tuple[str, ...], frozenset[str]] = {}
    jobs = []
    for path in files:
        extra = tuple(per_file.codes_for(path))
        if extra not in enabled_by_ignores:
            enabled_by_ignores[extra] = settings.enabled(list(extra))
        jobs.append(FileJob(path, enabled_by_ignores[extra]))
    cache = None if args.no_cache or os.environ.get("STABCHECK_NO_CACHE") else Cache(cache_dir(settings))
    diags = check_jobs(jobs, args.jobs, cache)

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

    fmt = args.output_format or "text"
    writer = write_statistics if args.statistics and fmt == "text" else WRITERS[fmt]
    writer(diags, sys.stdout, color=_use_color(args))
    if fmt == "text":
        fixable = sum(1 for d in diags if d.fix is not None)
        if fixed:
            print(f"Fixed {fixed} problem{'s' * (fixed != 1)}.")
        if fixable:
            note = f" ({hidden} more with --unsafe-fixes)" if hidden else ""
            print(f"[*] {fixable} fixable with --fix{note}.")
        elif hidden:
            print(f"{hidden} fix{'es' * (hidden != 1)} available with --fix --unsafe-fixes.")
    sys.stdout.flush()

    if missing or any(d.code == INTERNAL_ERROR.code for d in diags):
        return EXIT_ERROR
    if diags and not args.exit_zero:
        return EXIT_FINDINGS
    return EXIT_CLEAN


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
