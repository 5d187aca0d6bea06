"""A tree anyone could send in a pull request: stabcheck finishes in bounded
time and memory, reports each odd file as an STB9xx finding on that file,
checks everything else, writes only into a cache it created, deletes only
what it created, and never prints a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stabcheck.cache import DIRNAME, Cache
from stabcheck.cli import main
from stabcheck.filebytes import LIMIT

BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"  # STB001
SIGMOID_BUG = "import torch\n\np = torch.sigmoid(torch.randn(3))\nz = torch.log(p)\n"  # STB002
OLD = time.time() - 90 * 24 * 3600  # older than any age at which the cache drops its own files

# Runs stabcheck with `locked/` unlistable. Root reads any directory whatever
# its mode bits, so under root the EACCES another user would get is simulated
# where os.walk lists a directory.
RUNNER = """
import os, sys
from stabcheck.cli import main
real = os.scandir
def scandir(path="."):
    if os.path.basename(os.fspath(path)) == "locked":
        raise PermissionError(13, "Permission denied", os.fspath(path))
    return real(path)
if os.geteuid() == 0:
    os.scandir = scandir
sys.exit(main(sys.argv[1:]))
"""


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry under `roots` (links not followed) with its kind, size and mtime."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                out[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    repo, outside = base / "repo", base / "outside"
    repo.mkdir()
    outside.mkdir()
    (repo / "pyproject.toml").write_text("[tool.stabcheck]\n", encoding="utf-8")  # the cache goes next to it
    # A cache "directory" that is a link to someone's files, old enough to look stale.
    for name in ("train_results-v1.pkl", "results-0123456789abcdef0123.json", ".results-x.tmp"):
        (outside / name).write_text("precious\n", encoding="utf-8")
        os.utime(outside / name, (OLD, OLD))
    (repo / DIRNAME).symlink_to(outside, target_is_directory=True)
    os.mkfifo(repo / "x.py")
    (repo / "zero.py").symlink_to("/dev/zero")
    with open(repo / "huge.py", "wb") as fh:
        fh.truncate(LIMIT + 1)  # sparse: costs no disk
    (repo / "deep.py").write_text("y = " + " + ".join(f"x{i}" for i in range(5000)) + "\n", encoding="utf-8")
    (repo / "bigint.py").write_text("import torch\ny = torch.log(1" + "0" * 400 + " + x)\n", encoding="utf-8")
    (repo / "parens.py").write_text("y = " + "(" * 1000 + "1" + ")" * 1000 + "\n", encoding="utf-8")
    (repo / "bigint.ipynb").write_text('{"cells": [], "metadata": {"n": ' + "7" * 5000 + "}}", encoding="utf-8")
    (repo / "nested.ipynb").write_text("[" * 100_000, encoding="utf-8")
    (repo / "locked").mkdir()
    (repo / "locked" / "hidden.py").write_text(BUG, encoding="utf-8")
    (repo / "sub").mkdir()
    os.mkfifo(repo / "sub" / ".gitignore")
    (repo / "sub" / "y.py").write_text(SIGMOID_BUG, encoding="utf-8")
    (repo / ".gitignore").write_text("\\\nignored.py\n", encoding="utf-8")  # `\` is no pattern: skipped, as git does
    (repo / "ignored.py").write_text(BUG, encoding="utf-8")
    (repo / "ok.py").write_text(BUG, encoding="utf-8")
    with open(os.path.join(os.fsencode(repo), b"latin1-\xe9.py"), "w", encoding="utf-8") as fh:  # a name not UTF-8
        fh.write(SIGMOID_BUG)
    if os.geteuid() != 0:
        os.chmod(repo / "locked", 0)
    yield repo, outside
    os.chmod(repo / "locked", 0o755)


def run(repo: Path, *argv):
    import resource

    def limit_memory():  # /dev/zero read whole would blow through this
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))

    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", RUNNER, "check", "--output-format", "json", *argv, "."], cwd=repo,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit_memory,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                               "PYTHONIOENCODING": "utf-8"})  # strict: an odd name must not make it raise
    return proc, time.monotonic() - start


EXPECTED = {
    "x.py": ("STB902", "not a regular file (a FIFO)"),
    "zero.py": ("STB902", "not a regular file (a character device)"),
    "huge.py": ("STB902", "file too large"),
    "locked": ("STB902", "cannot read directory: Permission denied"),
    "deep.py": ("STB901", "past Python's recursion limit"),
    "parens.py": ("STB901", "too many nested parentheses"),
    "bigint.ipynb": ("STB901", "Exceeds the limit (4300 digits)"),
    "nested.ipynb": ("STB901", "nested too deeply"),
    "ok.py": ("STB001", "log of softmax"),
    "sub/y.py": ("STB002", "sigmoid"),
    "latin1-\udce9.py": ("STB002", "sigmoid"),
}


def test_long_operator_chains_take_linear_time(tmp_path):
    from stabcheck.engine import FileJob, check_jobs

    for operand in ("x", "1.0"):  # names, and constants that fold
        path = tmp_path / f"chain_{operand}.py"
        path.write_text("import torch\ny = torch.log(" + " + ".join([operand] * 4000) + ")\n", encoding="utf-8")
        start = time.perf_counter()
        found = check_jobs([FileJob(str(path), frozenset({"STB900", "STB901", "STB002"}))], 1)
        assert time.perf_counter() - start < 5  # 0.3 s here; it was quadratic: 7 s
        assert found == []  # analysed in full, not given up on


def findings(repo: Path, stdout: str) -> dict[str, tuple[str, str]]:
    return {Path(d["filename"]).relative_to(repo).as_posix(): (d["code"], d["message"]) for d in json.loads(stdout)}


@pytest.mark.parametrize("fmt", ["text", "full", "github", "sarif"])
def test_every_format_prints_odd_names_escaped(tree, fmt):
    repo, _ = tree
    proc, _ = run(repo, "--output-format", fmt)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ("%E9.py" if fmt == "sarif" else "latin1-\\udce9.py") in proc.stdout


def test_hostile_tree_is_reported_file_by_file_in_bounded_time(tree):
    repo, outside = tree
    before = snapshot(repo, outside)
    proc, seconds = run(repo)
    assert "Traceback" not in proc.stderr, proc.stderr
    found = findings(repo, proc.stdout)
    assert set(found) == set(EXPECTED)
    for name, (code, words) in EXPECTED.items():
        assert found[name][0] == code and words in found[name][1], (name, found[name])
    assert proc.returncode == 1
    assert seconds < 60  # ~1 s here; a FIFO used to hang and /dev/zero to fill memory
    # The linked cache directory is not ours: nothing in it read, written or deleted; nothing else written.
    assert snapshot(repo, outside) == before


def test_a_cache_it_created_is_the_only_thing_written(tree):
    repo, outside = tree
    (repo / DIRNAME).unlink()
    try:
        before = snapshot(repo, outside)
        cold, _ = run(repo)
        after = snapshot(repo, outside)
        assert {p for p in after.keys() ^ before.keys()} == {str(p) for p in (repo / DIRNAME).rglob("*")} | {
            str(repo / DIRNAME)}
        assert all(after[p] == before[p] for p in before)
        warm, _ = run(repo)
        assert (warm.returncode, warm.stdout) == (cold.returncode, cold.stdout)
    finally:
        for path in (repo / DIRNAME).iterdir():
            path.unlink()
        (repo / DIRNAME).rmdir()
        (repo / DIRNAME).symlink_to(outside, target_is_directory=True)


def test_an_untagged_cache_directory_is_not_ours(tmp_path, capsys, monkeypatch):
    cache = tmp_path / DIRNAME
    cache.mkdir()
    mine = Cache(cache).file  # named as stabcheck names its file, but the directory has no tag
    for path in (mine, cache / "results-0123456789abcdef0123.json", cache / "notes.txt"):
        path.write_text("{}", encoding="utf-8")
        os.utime(path, (OLD, OLD))
    (tmp_path / "bad.py").write_text(BUG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    before = snapshot(cache)
    assert main(["check", "--isolated", "bad.py"]) == 1
    assert snapshot(cache) == before


def _v(value):
    return lambda entry: {"t": entry["t"], "v": value}


@pytest.mark.parametrize("corrupt", [
    lambda entry: {"t": "yesterday", "v": entry["v"]},
    lambda entry: {"v": entry["v"]},
    lambda entry: "not an entry",
    _v("not a list"),
    _v([["STB001", "message", "4", 5, 4, 45, None, None]]),  # a row that is a string
    _v([["STB001", "message", 4, 5, 4, 45, None, ["title", "safe", [["0", 1, "x"]]]]]),  # an edit's offset
    _v([["STB001", "message", 4, 5, 4, 45, None, 7]]),  # a fix that is a number
    _v([["STB001"]]),
    _v(["not a module", {"f": 1}]),  # a phase-one summary of the wrong shape
    _v(json.loads("[" * 500 + "]" * 500)),
], ids=["time", "no-time", "entry", "value", "row", "edit", "fix", "short", "summary", "deep"])
def test_malformed_cache_entries_are_misses_not_crashes(tmp_path, capsys, monkeypatch, corrupt):
    (tmp_path / "pyproject.toml").write_text("[tool.stabcheck]\n", encoding="utf-8")
    (tmp_path / "bad.py").write_text(BUG, encoding="utf-8")
    (tmp_path / "probs.py").write_text("import torch\n\ndef f(x):\n    return torch.softmax(x, -1)\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = ["check", "-j", "1", "--output-format", "json", "."]
    assert main(argv) == 1
    cold = capsys.readouterr().out
    file = Cache(tmp_path / DIRNAME).file
    entries = json.loads(file.read_text(encoding="utf-8"))
    assert len(entries) == 4  # two results and two phase-one summaries, each corrupted below
    file.write_text(json.dumps({k: corrupt(e) for k, e in entries.items()}), encoding="utf-8")
    assert main(argv) == 1
    assert capsys.readouterr().out == cold
    assert main(argv) == 1  # and the cache written back serves the same
    assert capsys.readouterr().out == cold


def test_a_cache_file_nested_too_deeply_is_ignored(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.py").write_text(BUG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "--isolated", "bad.py"]) == 1
    cold = capsys.readouterr().out
    Cache(tmp_path / DIRNAME).file.write_text("[" * 100_000, encoding="utf-8")
    assert main(["check", "--isolated", "bad.py"]) == 1
    assert capsys.readouterr().out == cold
