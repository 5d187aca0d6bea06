"""TensorFlow is imported only by the code paths that need it."""

from __future__ import annotations

import subprocess
import sys

from tf_helpers import FIXTURES, ROOT, env


def _python(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env=env(), timeout=120)


def test_import_stabcheck_and_the_checker_do_not_import_tensorflow():
    code = ("import sys, stabcheck, stabcheck.runtime, stabcheck.runtime.api, stabcheck.runtime.tf_api, "
            "stabcheck.runtime.runner, stabcheck.cli\n"
            "stabcheck.trap\n"
            "from stabcheck.cli import main\n"
            "status = main(['check', '--no-cache', sys.argv[1]])\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'framework imported'\n"
            "print('status', status)\n")
    proc = _python(code, str(FIXTURES / "tf_log_softmax.py"))
    assert proc.returncode == 0, proc.stderr
    assert "status" in proc.stdout


def test_stabcheck_run_imports_tensorflow_only_when_the_script_does(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text("import sys\nprint('tf' if 'tensorflow' in sys.modules else 'no tf')\n")
    proc = subprocess.run([sys.executable, "-m", "stabcheck", "run", str(script)], cwd=ROOT, capture_output=True,
                          text=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no tf\n"
