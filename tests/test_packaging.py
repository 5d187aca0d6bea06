"""The wheel carries the catalog, so `stabcheck explain` works once installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = out.glob("stabcheck-*.whl")
    unpacked = out / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    return unpacked


def test_wheel_contains_every_catalog_page(wheel_dir):
    shipped = sorted(p.name for p in (wheel_dir / "stabcheck" / "_catalog").glob("STB*.md"))
    assert shipped == sorted(p.name for p in (ROOT / "rules").glob("STB*.md"))


def test_explain_from_the_installed_wheel(wheel_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(wheel_dir)}
    probe = subprocess.run(
        [sys.executable, "-c", "import stabcheck, sys; print(stabcheck.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=True,
    )
    assert probe.stdout.strip().startswith(str(wheel_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "stabcheck", "explain", "STB102"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# STB102: sigmoid-into-bce")
