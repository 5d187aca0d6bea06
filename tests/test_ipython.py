"""`%load_ext stabcheck`: notebooks run by a real Jupyter kernel (nbclient + ipykernel).

One kernel serves every notebook of this module (starting a kernel and
importing torch in it is most of the cost); each notebook begins by
(re)loading the extension, so none inherits another's settings. Cells carry
the kernel's execution count (In [n]), as a front end shows them: nbclient
would number each notebook's cells from 1.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("ipykernel")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from script_runs import base_env  # noqa: E402

LOAD = "%reload_ext stabcheck"

SETUP = "import torch\ntorch.manual_seed(0)"

FORWARD = [
    LOAD,
    SETUP + "\nmodel = torch.nn.Linear(4, 1)\nwith torch.no_grad():\n"
    "    model.weight.fill_(10.0)\n    model.bias.zero_()",
    "def bce(p, y):\n    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()",
    "x, y = torch.full((8, 4), 10.0), torch.ones(8, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "for step in range(3):\n    loss = bce(torch.sigmoid(model(x)), y)  # saturates: log(1 - 1.0)\n"
    "    opt.zero_grad()\n    loss.backward()\n    opt.step()",
    "print('alive', 1 + 1)",
    "%stabcheck check",
]

BACKWARD = [
    LOAD,
    SETUP + "\nmodel = torch.nn.Linear(4, 3)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)",
    "def distance(a, b):\n    return torch.sqrt(((a - b) ** 2).sum(dim=-1))",
    "a = torch.randn(6, 4)\nb = a.clone()  # distance 0: finite forward, infinite gradient\nfor step in range(2):\n"
    "    loss = distance(model(a), model(b)).mean()\n    opt.zero_grad()\n    loss.backward()\n    opt.step()",
    "print('alive', model.weight.isfinite().all().item())",
]

NET = SETUP + ("\nmodel = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))\n"
               "opt = torch.optim.SGD(model.parameters(), lr=0.1)\ncriterion = torch.nn.MSELoss()")
LOOP = ("for step in range(3):\n    loss = criterion(model(x), y)\n    opt.zero_grad()\n    loss.backward()\n"
        "    opt.step()\nprint('finished', step)")

DATA = [
    LOAD,
    NET,
    "x, y = torch.randn(8, 4), torch.zeros(8, 1)\nx[3, 1] = float('nan')  # a bad sample",
    LOOP,
    "print('alive')",
]

HEALTHY = [
    NET,
    "x, y = torch.randn(16, 4), torch.randn(16, 1)\n"
    + LOOP.replace("print('finished', step)", "    print(f'{step} {loss.item():.6f}')"),
    "model(x[:2]).detach()",
    "mask = torch.full((2, 2), float('-inf')).triu(1)  # an intentional -inf\ntorch.softmax(mask, -1)",
]


@pytest.fixture(scope="module")
def run_notebook():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=base_env())
    try:
        def run(cells: list[str]):
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])

            def in_number(cell, cell_index, execute_reply):  # the kernel's In[n], as a front end shows it
                cell.execution_count = execute_reply["content"]["execution_count"]

            client = nbclient.NotebookClient(nb, km=km, timeout=120, allow_errors=True, on_cell_executed=in_number)
            try:
                client.execute()
            finally:
                client.kc.stop_channels()
            return nb.cells

        yield run
    finally:
        km.shutdown_kernel(now=True)


def reports(cell) -> list[dict]:
    return [o.data for o in cell.outputs if o.output_type == "display_data" and "stabcheck-report" in
            o.data.get("text/html", "")]


def errors(cell) -> list:
    return [o for o in cell.outputs if o.output_type == "error"]


def text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def row(cell, needle: str) -> int:
    return next(i for i, line in enumerate(cell.source.splitlines(), start=1) if needle in line)


def assert_stopped_then_alive(cells, failing: int, headline: str) -> dict:
    """The failing cell shows one report, then fails with the trap's error (cells' frames only); the
    next cell runs. Returns the report's display bundle."""
    cell = cells[failing]
    (report,) = reports(cell)
    (error,) = errors(cell)
    assert cell.outputs.index(error) > [o.output_type for o in cell.outputs].index("display_data")
    assert error.ename == "NonFiniteError" and headline in error.evalue
    trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))  # no colours
    assert f"In[{cell.execution_count}]" in trace
    assert "stabcheck/runtime" not in trace and "site-packages" not in trace
    assert headline in report["text/html"] and headline in report["text/plain"]
    after = cells[failing + 1]
    assert not errors(after) and "alive" in text(after)
    return report


def test_forward_nan_is_reported_at_its_cell_and_line(run_notebook):
    cells = run_notebook(FORWARD)
    report = assert_stopped_then_alive(cells, 3, "aten.log.default produced -Inf in forward (step 0)")
    where = f"cell {cells[2].execution_count}:2 in bce"  # the def's cell, not the one that called it
    assert f"<code>{where}</code>" in report["text/html"]
    assert re.search(rf"at\s+{where}", report["text/plain"])
    assert "STB002" in report["text/html"] and "log of an exact 0" in report["text/html"]
    assert f"cell {cells[3].execution_count}:{row(cells[3], 'backward')}" in report["text/html"]  # detected at
    assert "alive 2" in text(cells[4])
    # `%stabcheck check`: the static findings of the cells run so far, with the same cell numbers
    assert f"cell {cells[2].execution_count}:2:43: STB002" in text(cells[5])


def test_backward_nan_names_the_forward_line_that_made_it(run_notebook):
    cells = run_notebook(BACKWARD)
    report = assert_stopped_then_alive(cells, 3, "aten.div.Tensor produced +Inf in backward (step 0)")
    where = f"cell {cells[2].execution_count}:2 in distance"
    assert f"sqrt (SqrtBackward0) at {where}" in report["text/html"]
    assert "STB202" in report["text/html"]
    assert "alive True" in text(cells[4])  # the failing step stopped before its update


def test_nan_in_the_data_is_named_as_such(run_notebook):
    cells = run_notebook(DATA)
    report = assert_stopped_then_alive(cells, 3, "the input already contains NaN (step 0)")
    assert f"<code>cell {cells[3].execution_count}:{row(cells[3], 'model(x)')} in &lt;module&gt;</code>" in \
        report["text/html"]
    assert "<th" in report["text/html"] and ">nan</th>" in report["text/html"]  # the statistics table


def test_healthy_notebook_outputs_are_unchanged(run_notebook):
    plain = run_notebook(["%unload_ext stabcheck"] + HEALTHY)[1:]
    trapped = run_notebook([LOAD] + HEALTHY)[1:]

    def outputs(cells):
        return [[(o.output_type, o.get("text"), dict(o.get("data", {}))) for o in c.outputs] for c in cells]

    assert outputs(trapped) == outputs(plain)
    assert len(text(trapped[1]).splitlines()) == 3 and "execute_result" in str(outputs(trapped))


def test_modes_warn_off_and_the_cell_magic(run_notebook, tmp_path):
    static = tmp_path / "fwd.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in FORWARD]), static)
    cells = run_notebook([
        LOAD, NET, "x, y = torch.randn(8, 4), torch.zeros(8, 1)\nx[3, 1] = float('nan')",
        "%stabcheck warn", LOOP,                            # 4: reported once, and the loop goes on
        "%stabcheck off", LOOP,                             # 6: not trapped
        "%%stabcheck\nout = model(x)\ncriterion(out, y)",   # 7: trapped, lines counted from the magic
        "%%stabcheck warn\n1 + 1",                          # 8: the last expression is the cell's value
        "%stabcheck bogus",
        f"%stabcheck check --no-cache {static}",
        "%stabcheck on stop per-op",
        "z = torch.zeros(3)\nu = z / z.norm()  # never reaches a loss: checked as the cell ends\nprint('printed')",
    ])
    assert "report each NaN/Inf and go on" in text(cells[3])
    (warned,) = reports(cells[4])
    assert "run continues" in warned["text/html"] and not errors(cells[4])
    assert "finished 2" in text(cells[4])
    assert not reports(cells[6]) and "finished 2" in text(cells[6])
    (stopped,) = reports(cells[7])
    assert f"<code>cell {cells[7].execution_count}:2 in &lt;module&gt;</code>" in stopped["text/html"]
    assert errors(cells[7])[0].ename == "NonFiniteError"
    assert [o.data["text/plain"] for o in cells[8].outputs if o.output_type == "execute_result"] == ["2"]
    assert "UsageError: %stabcheck: unknown option 'bogus'" in text(cells[9])
    assert "fwd.ipynb:cell 3:2:18: STB002" in text(cells[10])
    (late,) = reports(cells[12])
    assert f"<code>cell {cells[12].execution_count}:2 in &lt;module&gt;</code>" in late["text/html"]
    assert "printed" in text(cells[12]) and errors(cells[12])[0].ename == "NonFiniteError"  # the cell fails


def test_report_html_draws_the_history_when_there_is_one():
    from stabcheck.runtime.report import Location, TrapReport
    from stabcheck.runtime.report_html import history_series, to_html

    report = TrapReport(phase="forward", kind="+inf", op="aten.mse_loss.default",
                        location=Location("cell 4", 3, "<module>"), hint="diverged <fast>")
    assert "<svg" not in to_html(report)  # no history recorded: no plot
    report.history = {"step": [1, 2, 3, 4], "loss": [0.5, 40.0, 9e6, None], "grad_norm": [1.0, 2.0, 3.0, "inf"]}
    page = to_html(report)
    assert page.count("<svg") == 2 and page.count("<polyline") == 2
    assert page.count('fill="#c62828"') == 2  # one red mark per non-finite value
    assert "<title>log scale</title>" in page and "<title>linear scale</title>" in page  # loss spans 7 decades
    assert "diverged &lt;fast&gt;" in page and "<code>cell 4:3 in &lt;module&gt;</code>" in page
    rows = [{"step": 1, "loss": 0.5, "grad_norm": 1.0}, {"step": 2, "loss": None, "grad_norm": 2.0}]
    series = dict(history_series(rows))
    assert series["grad_norm"] == [1.0, 2.0] and math.isnan(series["loss"][1]) and "step" not in series


def test_import_stabcheck_stays_light():
    code = ("import sys, stabcheck, stabcheck.ipython, stabcheck.runtime.report_html\n"
            "heavy = {'IPython', 'torch', 'tensorflow'} & set(sys.modules)\nassert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=base_env())
    assert proc.returncode == 0, proc.stderr


def test_trap_on_report_gets_each_report_before_a_stop_and_only_inside_the_block():
    import torch

    import stabcheck
    from stabcheck.runtime import NonFiniteError, incident

    got = []
    bad = torch.full((2, 2), float("nan"))
    with stabcheck.trap(action="warn", quiet=True, on_report=got.append):
        model, criterion = torch.nn.Linear(2, 1), torch.nn.MSELoss()
        criterion(model(bad), torch.zeros(2, 1)).backward()
    assert [(r.status, r.phase) for r in got] == [("warned", "input")]
    with pytest.raises(NonFiniteError) as stop, stabcheck.trap(quiet=True, on_report=got.append):
        criterion(model(bad), torch.zeros(2, 1))
    assert got[1] is stop.value.report and got[1].status == "trapped"
    assert got.append not in incident.listeners
    with stabcheck.trap(action="warn", quiet=True):
        criterion(model(bad), torch.zeros(2, 1))
    assert len(got) == 2  # not listening any more
