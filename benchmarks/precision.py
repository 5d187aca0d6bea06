"""How many of stabcheck's findings on healthy, well-known ML code are real.

Downloads pinned wheels of ML libraries (`pip download --no-deps`; a wheel
carries the library's Python sources), lints them as a user would
(`stabcheck check --output-format json`, default selection, then every rule
with `--select ALL`), and compares each finding with the committed judgement
tables `benchmarks/precision/<corpus>.tsv`:

    file<TAB>line<TAB>code<TAB>verdict<TAB>reason

verdict: TP (a real hazard), WEAK (the pattern, harmless in practice but
defensible to flag), FP (wrong). It prints, per tier and per rule, the
findings, the verdicts and the precision (TP / judged), and the findings per
100k lines that are not real hazards (WEAK + FP), then lists the findings
nobody has judged yet (as TSV rows with verdict `?`, ready to fill in).

    python benchmarks/precision.py [--cache DIR] [--only NAME,...] [--tier default|all]

The installed `keras` and `torch` are linted too (their versions are printed;
their tables were judged on the versions named in CORPUS).
"""

from __future__ import annotations

import argparse
import collections
import csv
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TABLES = HERE / "precision"

# name, pinned version, source folders linted (inside the wheel or the
# installed package's parent directory). Tune only on these; other codebases
# are kept for evaluation.
CORPUS = [
    ("transformers", "5.24.0", ["transformers/models", "transformers/loss"]),
    ("torchvision", "0.29.1", ["torchvision"]),
    ("torchaudio", "2.11.1", ["torchaudio"]),
    ("torchmetrics", "1.9.0", ["torchmetrics"]),
    ("tensorflow-probability", "0.25.0", ["tensorflow_probability"]),
    ("optax", "0.2.8", ["optax"]),
    ("gpytorch", "1.15.2", ["gpytorch"]),
    ("botorch", "0.18.1", ["botorch"]),
    ("sentence-transformers", "6.2.0", ["sentence_transformers"]),
    ("peft", "0.21.2", ["peft"]),
    ("accelerate", "1.15.0", ["accelerate"]),
    ("dm-haiku", "0.0.17", ["haiku"]),
    ("equinox", "0.13.8", ["equinox"]),
    ("torchrl", "0.14.1", ["torchrl"]),
    ("stable-baselines3", "2.9.2", ["stable_baselines3"]),
    ("skorch", "1.4.0", ["skorch"]),
    ("timm", "1.0.31", ["timm"]),
    ("diffusers", "0.42.1", ["diffusers"]),
]
INSTALLED = [
    ("keras", "3.15.1", ["keras/src"]),
    ("torch", "2.13.0", ["torch/nn", "torch/distributions", "torch/optim"]),
]
VERDICTS = ("TP", "WEAK", "FP")


def fetch(name: str, version: str, cache: Path) -> Path:
    """The wheel's sources, extracted once into `cache/name-version/`."""
    dest = cache / f"{name}-{version}"
    if (dest / ".complete").exists():
        return dest
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = _wheel(wheels, name, version)
    if found is None:
        # A Linux x86-64 CPython 3.11 wheel: the sources are the same on every platform.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "--python-version",
             "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
             "-d", str(wheels), f"{name}=={version}"],
            check=True,
        )
        found = _wheel(wheels, name, version)
        if found is None:
            sys.exit(f"pip downloaded no wheel for {name}=={version}")
    with zipfile.ZipFile(found) as zf:
        for member in zf.namelist():
            if member.endswith(".py") and ".." not in member.split("/"):
                zf.extract(member, dest)
    (dest / ".complete").touch()
    return dest


def _wheel(folder: Path, name: str, version: str) -> Path | None:
    stem = name.replace("-", "_").lower()
    for path in folder.glob("*.whl"):
        dist, _, rest = path.name.partition("-")
        if dist.lower() == stem and rest.startswith(version + "-"):
            return path
    return None


def installed(name: str) -> tuple[Path, str] | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    from importlib.metadata import version  # importing the package itself can take seconds (TensorFlow)

    return Path(spec.submodule_search_locations[0]).parent, version(name).split("+")[0]


def lint(root: Path, folders: list[str], select_all: bool) -> list[dict]:
    cmd = [sys.executable, "-m", "stabcheck", "check", "--output-format", "json", "--exit-zero", "--no-cache",
           "--isolated", *folders]
    if select_all:
        cmd += ["--select", "ALL"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"stabcheck failed in {root}: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def count_lines(root: Path, folders: list[str]) -> int:
    total = 0
    for folder in folders:
        for path in (root / folder).rglob("*.py"):
            with open(path, "rb") as fh:
                total += fh.read().count(b"\n")
    return total


def load_table(name: str) -> dict[tuple[str, int, str], tuple[str, str]]:
    path = TABLES / f"{name}.tsv"
    table = {}
    if path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.reader(fh, delimiter="\t"):
                if not row or row[0].startswith("#"):
                    continue
                file, line, code, verdict, reason = (row + [""] * 5)[:5]
                if verdict not in VERDICTS:
                    sys.exit(f"{path}: bad verdict {verdict!r} in {row}")
                table[(file, int(line), code)] = (verdict, reason)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/stabcheck-precision"))
    ap.add_argument("--only", help="comma-separated corpus names")
    ap.add_argument("--tier", choices=("default", "all", "both"), default="both")
    ap.add_argument("--quiet-unjudged", action="store_true", help="count unjudged findings without listing them")
    args = ap.parse_args()
    cache = Path(args.cache)
    only = set(args.only.split(",")) if args.only else None

    tiers = ["default", "all"] if args.tier == "both" else [args.tier]
    stats = {t: collections.defaultdict(collections.Counter) for t in tiers}
    unjudged: list[str] = []
    total_lines = 0
    print(f"{'corpus':<24}{'version':>10}{'lines':>10}" + "".join(f"{t:>10}" for t in tiers))
    for name, version, folders in CORPUS + INSTALLED:
        if only and name not in only:
            continue
        if (name, version, folders) in INSTALLED:
            found = installed(name)
            if found is None:
                print(f"{name:<24}  not installed: skipped")
                continue
            root, have = found
            if have != version:
                print(f"  note: {name} {have} installed, its table was judged on {version}")
                version = have
        else:
            root = fetch(name, version, cache)
        lines = count_lines(root, folders)
        total_lines += lines
        table = load_table(name)
        counts = []
        for tier in tiers:
            findings = lint(root, folders, select_all=tier == "all")
            counts.append(len(findings))
            for f in findings:
                key = (os.path.relpath(f["filename"], root), f["location"]["row"], f["code"])
                verdict, _ = table.get(key, ("?", ""))
                rule = stats[tier][f["code"]]
                rule["findings"] += 1
                rule[verdict] += 1
                if verdict == "?" and (tier == "default" or key not in seen_unjudged):
                    seen_unjudged.add(key)
                    message = f["message"].replace("\t", " ")[:160]
                    unjudged.append(f"{name}\t{key[0]}\t{key[1]}\t{key[2]}\t?\t{message}")
        print(f"{name:<24}{version:>10}{lines:>10}" + "".join(f"{c:>10}" for c in counts))

    for tier in tiers:
        print(f"\n== tier: {tier} ({'default selection' if tier == 'default' else '--select ALL'})")
        print(f"{'rule':<8}{'found':>7}{'TP':>6}{'WEAK':>6}{'FP':>6}{'?':>6}{'precision':>11}")
        total = collections.Counter()
        for code in sorted(stats[tier]):
            c = stats[tier][code]
            total.update(c)
            print(f"{code:<8}{c['findings']:>7}{c['TP']:>6}{c['WEAK']:>6}{c['FP']:>6}{c['?']:>6}{_precision(c):>11}")
        print(f"{'all':<8}{total['findings']:>7}{total['TP']:>6}{total['WEAK']:>6}{total['FP']:>6}{total['?']:>6}"
              f"{_precision(total):>11}")
        per100k = (total["WEAK"] + total["FP"]) / max(total_lines, 1) * 1e5
        print(f"lines linted: {total_lines}; findings per 100k lines: {total['findings'] / max(total_lines, 1) * 1e5:.2f};"
              f" not real (WEAK + FP) per 100k lines: {per100k:.2f}")
    if unjudged:
        print(f"\n{len(unjudged)} unjudged finding(s):")
        if not args.quiet_unjudged:
            print("\n".join(unjudged))
    return 0


seen_unjudged: set = set()


def _precision(c: collections.Counter) -> str:
    judged = c["TP"] + c["WEAK"] + c["FP"]
    return f"{100 * c['TP'] / judged:.0f}%" if judged else "-"


if __name__ == "__main__":
    sys.exit(main())
