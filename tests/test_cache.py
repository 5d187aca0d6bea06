"""The result cache: keyed by content and job, atomic, shared safely."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stabcheck.engine
from stabcheck.cache import DIRNAME, Cache
from stabcheck.cli import main
from stabcheck.engine import FileJob, check_jobs

BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"
CLEAN = "import torch\n\ny = torch.log_softmax(torch.randn(3), -1)\n"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.stabcheck]\n", encoding="utf-8")
    (tmp_path / "bad.py").write_text(BUG, encoding="utf-8")
    (tmp_path / "good.py").write_text(CLEAN, encoding="utf-8")
    monkeypatch.chdir(tmp_path / "..")  # the cache goes next to the pyproject.toml, not in the cwd
    return tmp_path


def check(capsys, *argv):
    code = main(["check", "-j", "1", *argv])
    return code, capsys.readouterr().out


def no_checking(monkeypatch):
    def fail(job):
        raise AssertionError(f"{job.path} was checked, not served from the cache")

    monkeypatch.setattr(stabcheck.engine, "check_file", fail)


def test_warm_run_is_served_from_the_cache(project, capsys, monkeypatch):
    cold = check(capsys, str(project))
    assert cold[0] == 1 and "STB001" in cold[1]
    cache = project / DIRNAME
    assert (cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert not (project.parent / DIRNAME).exists()
    no_checking(monkeypatch)
    assert check(capsys, str(project)) == cold
    assert check(capsys, "--output-format", "json", str(project / "bad.py"))[0] == 1


def test_changed_content_or_selection_is_checked_again(project, capsys, monkeypatch):
    check(capsys, str(project))
    (project / "good.py").write_text(BUG, encoding="utf-8")
    code, out = check(capsys, str(project))
    assert out.count("STB001") == 2
    code, out = check(capsys, "--ignore", "STB001", str(project))
    assert code == 0  # a different selection is a different key, not the cached findings


def test_no_cache_neither_reads_nor_writes(project, capsys, monkeypatch):
    code, _ = check(capsys, "--no-cache", str(project))
    assert code == 1
    assert not (project / DIRNAME).exists()
    monkeypatch.setenv("STABCHECK_NO_CACHE", "1")
    check(capsys, str(project))
    assert not (project / DIRNAME).exists()


def test_corrupt_cache_is_ignored_and_replaced(project, capsys):
    check(capsys, str(project))
    (results,) = (project / DIRNAME).glob("results-*.json")
    results.write_text('{"truncated": ', encoding="utf-8")
    assert check(capsys, str(project))[0] == 1
    assert isinstance(json.loads(results.read_text()), dict)


def test_interrupted_write_leaves_the_old_cache_and_no_temp_file(project, capsys, monkeypatch):
    check(capsys, str(project))
    (results,) = (project / DIRNAME).glob("results-*.json")
    before = results.read_text()
    (project / "new.py").write_text(CLEAN, encoding="utf-8")

    def interrupted(obj, fh, **kw):
        fh.write('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setattr("stabcheck.cache.json.dump", interrupted)
    with pytest.raises(KeyboardInterrupt):
        check_jobs([FileJob(str(project / "new.py"), frozenset({"STB001"}))], 1, Cache(project / DIRNAME))
    assert results.read_text() == before
    assert sorted(p.name for p in (project / DIRNAME).iterdir()) == [".gitignore", "CACHEDIR.TAG", results.name]


def test_parallel_runs_agree_and_leave_a_valid_cache(project):
    for i in range(20):
        (project / f"m{i}.py").write_text(f"# {i}\n" + (BUG if i % 2 else CLEAN), encoding="utf-8")
    cmd = [sys.executable, "-m", "stabcheck", "check", "-j", "2", str(project)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [1] * 4, [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1 and "Found 11 problems in 11 files." in outs[0][0]
    (results,) = (project / DIRNAME).glob("results-*.json")
    assert len(json.loads(results.read_text())) == 2 * 22  # a module summary and the findings per file
    assert not list((project / DIRNAME).glob("*.tmp"))


def test_key_hashes_every_job_field_but_the_path(tmp_path):
    data = "0123abcd"  # the content digest
    a = FileJob("a.py", frozenset({"STB001", "STB002"}))
    assert Cache.key(a, data) == Cache.key(FileJob("sub/b.py", frozenset({"STB002", "STB001"})), data)
    assert Cache.key(a, data) != Cache.key(FileJob("a.py", frozenset({"STB001"})), data)
    assert Cache.key(a, data) != Cache.key(FileJob("a.ipynb", a.codes), data)
    assert Cache.key(a, data) != Cache.key(a, data + "e")
    Wider = dataclasses.make_dataclass("Wider", [("path", str), ("codes", frozenset), ("modules", tuple)], frozen=True)
    k1 = Cache.key(Wider("a.py", a.codes, (("pkg.models", "abc"),)), data)
    k2 = Cache.key(Wider("a.py", a.codes, (("pkg.models", "def"),)), data)
    assert k1 != k2


def test_cache_lives_next_to_the_config_or_in_the_cwd(tmp_path, capsys, monkeypatch):
    (tmp_path / "f.py").write_text(CLEAN, encoding="utf-8")
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    monkeypatch.chdir(sub)
    main(["check", "--isolated", str(tmp_path / "f.py")])
    capsys.readouterr()
    assert (sub / DIRNAME / "CACHEDIR.TAG").is_file()
    assert not (tmp_path / DIRNAME).exists()
    assert os.listdir(sub) == [DIRNAME]


MODEL = """import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def forward(self, x):
        return F.softmax(x, -1)
"""
TRAIN = """import torch.nn as nn
from pkg.model import Net


def loss(x, y):
    return nn.CrossEntropyLoss()(Net()(x), y)
"""


def test_a_change_in_another_module_invalidates_dependent_results(project, capsys, monkeypatch):
    pkg = project / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "model.py").write_text(MODEL, encoding="utf-8")
    (pkg / "train.py").write_text(TRAIN, encoding="utf-8")
    code, out = check(capsys, str(pkg))
    assert "train.py:6:" in out and "STB101" in out
    with monkeypatch.context() as m:
        no_checking(m)
        assert check(capsys, str(pkg)) == (code, out)
    (pkg / "model.py").write_text(MODEL.replace("F.softmax(x, -1)", "x"), encoding="utf-8")
    assert check(capsys, str(pkg))[0] == 0  # train.py was checked again, with the new summary


def test_cached_module_summaries_equal_fresh_ones(project):
    from stabcheck import project as proj

    pkg = project / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "model.py").write_text(MODEL, encoding="utf-8")
    paths = [str(pkg / "__init__.py"), str(pkg / "model.py"), str(project / "bad.py")]
    fresh = proj.build_index(paths)
    assert fresh  # Net is exported
    cold = Cache(project / DIRNAME)
    assert proj.build_index(paths, cold.summaries(map)) == fresh
    cold.save()
    warm = Cache(project / DIRNAME)

    def no_summaries(fn, todo):
        assert list(todo) == [], "summaries were computed again"
        return iter(())

    assert proj.build_index(paths, warm.summaries(no_summaries)) == fresh
    assert proj.digest(proj.build_index(paths, warm.summaries(no_summaries))) == proj.digest(fresh)
