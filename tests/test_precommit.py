"""The pre-commit hook: installed by pre-commit itself from this repository,
it fails on a file with a finding and passes on a clean one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"
CLEAN = "import torch\n\ny = torch.log_softmax(torch.randn(3), -1)\n"


def pre_commit(*args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_manifest_is_valid_and_declares_the_hooks():
    pytest.importorskip("pre_commit")
    import yaml  # pre-commit depends on PyYAML

    proc = subprocess.run([sys.executable, "-m", "pre_commit", "validate-manifest", str(MANIFEST)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hooks = {h["id"]: h for h in yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))}
    assert hooks["stabcheck"]["entry"] == "stabcheck check"
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["types_or"] == ["python", "jupyter"]
        assert hook["require_serial"] is True
    assert hooks["stabcheck-fix"]["entry"] == "stabcheck check --fix"


@pytest.mark.slow
def test_try_repo_fails_on_a_bad_file_and_passes_on_a_good_one(tmp_path):
    pytest.importorskip("pre_commit")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout of stabcheck")
    user = tmp_path / "project"
    user.mkdir()
    (user / "bad.py").write_text(BUG, encoding="utf-8")
    (user / "good.py").write_text(CLEAN, encoding="utf-8")
    (user / "notes.txt").write_text("torch.log(F.softmax(x))\n", encoding="utf-8")  # not Python: not passed
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    subprocess.run(["git", "init", "-q"], cwd=user, check=True, env=env)
    subprocess.run(["git", "add", "."], cwd=user, check=True, env=env)

    bad = pre_commit("try-repo", str(ROOT), "stabcheck", "--files", "bad.py", "notes.txt", "--verbose", cwd=user, env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Failed" in bad.stdout
    assert "bad.py:4:5: STB001 " in bad.stdout

    good = pre_commit("try-repo", str(ROOT), "stabcheck", "--files", "good.py", cwd=user, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout

    # The fix hook rewrites the file (pre-commit reports a hook that modifies files as failed).
    fixed = pre_commit("try-repo", str(ROOT), "stabcheck-fix", "--files", "bad.py", cwd=user, env=env)
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "files were modified by this hook" in fixed.stdout
    assert "F.log_softmax(torch.randn(3), -1)" in (user / "bad.py").read_text(encoding="utf-8")
    again = pre_commit("try-repo", str(ROOT), "stabcheck-fix", "--files", "bad.py", cwd=user, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
