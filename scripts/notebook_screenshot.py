"""The README's picture of the trap's report in a notebook, made for real.

Runs a small notebook in a Jupyter kernel (nbclient + ipykernel, this
checkout's stabcheck), writes its cells and outputs as a static HTML page
(prompts, code, the report's own HTML, the error), and photographs the page
with headless Chromium (`apt-get install chromium`):

    python scripts/notebook_screenshot.py                  # -> docs/notebook-report.png
    python scripts/notebook_screenshot.py --html page.html # keep the page too
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 860

CELLS = [
    "%load_ext stabcheck",
    "import torch\nfrom torch import nn\n\ntorch.manual_seed(0)\n"
    "model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.5)",
    "def bce(p, y):\n    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()",
    "x = torch.randn(64, 2) * 30  # features not normalised\ny = (x[:, :1] > 0).float()\nfor step in range(200):\n"
    "    loss = bce(torch.sigmoid(model(x)), y)\n    opt.zero_grad()\n    loss.backward()\n    opt.step()",
    "print('the kernel goes on:', step)",
]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
body {{ font-family: "DejaVu Sans", sans-serif; margin: 12px; width: {width}px; color: #212121; background: #fff }}
.cell {{ display: flex; margin: 6px 0 }}
.prompt {{ width: 64px; flex: none; font-family: "DejaVu Sans Mono", monospace; font-size: 13px; color: #303f9f;
          padding-top: 5px }}
.body {{ flex: 1; min-width: 0 }}
pre {{ margin: 0; font-family: "DejaVu Sans Mono", monospace; font-size: 12.5px; white-space: pre-wrap }}
.code {{ background: #f5f5f5; border: 1px solid #e0e0e0; border-radius: 2px; padding: 5px 7px }}
.out {{ padding: 4px 7px }}
.err {{ background: #fdecea; padding: 4px 7px }}
</style></head><body>{cells}</body></html>"""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_notebook() -> list:
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    env_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = env_path  # the kernel imports this checkout's stabcheck
    nbclient.NotebookClient(nb, timeout=300, allow_errors=True, kernel_name="python3").execute()
    return nb.cells


def render_output(output) -> str:
    kind = output.output_type
    if kind == "stream":
        return f'<div class="out"><pre>{html.escape(output.text)}</pre></div>'
    if kind == "error":
        return f'<div class="err"><pre>{html.escape(_ANSI.sub("", chr(10).join(output.traceback)))}</pre></div>'
    data = output.get("data", {})
    if "text/html" in data:
        return f'<div class="out">{data["text/html"]}</div>'
    return f'<div class="out"><pre>{html.escape(data.get("text/plain", ""))}</pre></div>'


def page(cells) -> str:
    parts = []
    for cell in cells:
        parts.append(f'<div class="cell"><div class="prompt">In [{cell.execution_count}]:</div><div class="body">'
                     f'<pre class="code">{html.escape(cell.source)}</pre>'
                     f'{"".join(render_output(o) for o in cell.outputs)}</div></div>')
    return PAGE.format(width=WIDTH, cells="".join(parts))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: `apt-get install chromium` (or put chrome on PATH)")


def screenshot(page_path: Path, png: Path) -> None:
    browser = chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1"]
    url = page_path.as_uri()
    # first pass: the page's height, written into the DOM by a line of script
    probe = page_path.with_name("probe.html")
    probe.write_text(page_path.read_text(encoding="utf-8").replace(
        "</body>", "<script>document.body.dataset.h = Math.ceil(document.body.getBoundingClientRect().bottom) + 12"
        "</script></body>"),
        encoding="utf-8")
    dom = subprocess.run([browser, *flags, f"--window-size={WIDTH + 40},2000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-h="(\d+)"', dom)
    height = int(match.group(1)) if match else 1200
    subprocess.run([browser, *flags, f"--window-size={WIDTH + 40},{height}", f"--screenshot={png}", url],
                   capture_output=True, timeout=120, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "notebook-report.png"))
    parser.add_argument("--html", help="also write the page here")
    args = parser.parse_args()
    text = page(run_notebook())
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "notebook.html"
        page_path.write_text(text, encoding="utf-8")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(page_path, out)
    if args.html:
        Path(args.html).write_text(text, encoding="utf-8")
    print(f"{out}: {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
