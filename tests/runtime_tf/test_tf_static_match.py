"""The rule a TensorFlow/Keras runtime report names is the one the static checker reports at the same
line (the runtime tests assert the report's rule; this asserts the checker's). No TensorFlow needed."""

from __future__ import annotations

import json
import subprocess
import sys

from tf_helpers import FIXTURES, ROOT, env, line_of

# fixture -> the rule its runtime report names (asserted in test_trap_tf.py)
RUNTIME_RULES = {
    "tf_log_softmax.py": "STB002",
    "keras_log_one_minus_p.py": "STB002",
    "tf_zero_norm_divide.py": "STB201",
    "tf_pretraced_api.py": "STB201",
    "tf_sqrt_distance.py": "STB202",
    "sqrt_exp_std.py": "STB006",  # PyTorch (test_trap_exits.py): the same rule for the same idiom
}


def test_static_checker_flags_the_line_the_trap_reports():
    # Every rule and shape: a norm division is in STB201's opt-in tier.
    paths = [FIXTURES / name for name in RUNTIME_RULES]
    proc = subprocess.run([sys.executable, "-m", "stabcheck", "check", "--isolated", "--no-cache", "--exit-zero",
                           "--select", "ALL", "--output-format", "json", *map(str, paths)], cwd=ROOT, capture_output=True, text=True,
                          env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = {(d["filename"], d["location"]["row"], d["code"]) for d in json.loads(proc.stdout)}
    for path in paths:
        assert (str(path), line_of(path, "# FAULT"), RUNTIME_RULES[path.name]) in found, path.name
