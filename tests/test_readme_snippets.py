"""The README's snippets for `stabcheck check` work as written: every option
of its usage block exists, its configuration loads, its pre-commit hook runs,
the commands of its GitHub Actions workflow parse."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from stabcheck import config
from stabcheck.cli import _build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BUG = "import torch\nimport torch.nn.functional as F\n\ny = torch.log(F.softmax(torch.randn(3), -1))\n"


def block(after: str, lang: str) -> str:
    m = re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", README, re.S)
    assert m, f"README lost its {lang} block after {after!r}"
    return m.group(1)


def test_every_option_in_the_usage_block_exists():
    usage = block("## Using `stabcheck check`", "text")
    parser = _build_parser()
    check_options = set(parser.commands["check"]._option_string_actions)
    listed = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", usage))
    assert {"-o", "--output-file", "--stdin-filename", "--statistics", "-V"} <= listed
    assert listed - {"-V"} <= check_options, listed - check_options
    assert "-V" in parser._option_string_actions
    formats = re.search(r"--output-format ([\w|]+)", usage).group(1).split("|")
    assert formats == list(parser.commands["check"]._option_string_actions["--output-format"].choices)


def test_the_configuration_block_loads(tmp_path):
    (tmp_path / "pyproject.toml").write_text(block("### Configuration", "toml"), encoding="utf-8")
    settings = config.load(None, tmp_path)
    assert settings.select == ["DEFAULT"] and settings.ignore == ["STB104"]
    assert settings.per_file_ignores["scripts/legacy_*.py"] == ["STB2"]
    assert settings.per_file_ignores["test_*.py"] == ["STB0", "STB1", "STB2"]  # extended, not replaced


def test_the_github_actions_commands_parse():
    workflow = block("### GitHub Actions", "yaml")
    commands = [line.split("- run: ", 1)[1].split(" > ")[0].split("#")[0].split()
                for line in workflow.splitlines() if "- run: stabcheck " in line]
    assert len(commands) == 2
    for argv in commands:
        args = _build_parser().parse_args(argv[1:])
        assert args.command == "check" and args.output_format in ("github", "sarif")


def test_the_pre_commit_snippet_works_as_written(tmp_path):
    pytest.importorskip("pre_commit")
    scripts = sysconfig.get_path("scripts")
    if shutil.which("git") is None or shutil.which("stabcheck", path=scripts) is None:
        pytest.skip("needs git and the installed `stabcheck` command (pip install -e .)")
    snippet = block("<!-- pre-commit-config -->", "yaml")
    user = tmp_path / "project"
    user.mkdir()
    (user / ".pre-commit-config.yaml").write_text(snippet, encoding="utf-8")
    (user / "bad.py").write_text(BUG, encoding="utf-8")
    (user / "good.py").write_text("x = 1\n", encoding="utf-8")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": scripts + os.pathsep + os.environ.get("PATH", ""),
           # the stabcheck under test, whichever checkout the command was installed from
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(["git", "init", "-q"], cwd=user, check=True, env=env)
    subprocess.run(["git", "add", "."], cwd=user, check=True, env=env)

    def pre_commit(*files):
        return subprocess.run([sys.executable, "-m", "pre_commit", "run", "--files", *files], cwd=user, env=env,
                              capture_output=True, text=True, timeout=300)

    bad = pre_commit("bad.py")
    assert bad.returncode == 1 and "bad.py:4:5: STB001 " in bad.stdout, bad.stdout + bad.stderr
    good = pre_commit("good.py")
    assert good.returncode == 0 and "Passed" in good.stdout, good.stdout + good.stderr
