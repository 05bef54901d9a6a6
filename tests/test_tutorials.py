"""The tutorial notebooks (docs/tutorials): in step with their generator, free of outputs, and
each executed from start to end in a temporary folder."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
NAMES = sorted(p.stem for p in TUTORIALS.glob("*.ipynb"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", TUTORIALS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebooks_are_the_generators_and_store_no_outputs():
    gen = _generator()
    assert NAMES == sorted(gen.NOTEBOOKS) == ["attack", "compress", "inspect", "measure", "sweeps"]
    for name in NAMES:
        text = (TUTORIALS / f"{name}.ipynb").read_text(encoding="utf-8")
        assert text == gen.render(name), f"{name}.ipynb: run docs/tutorials/make_notebooks.py"
        nb = json.loads(text)
        assert nb["nbformat"] == 4
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
        assert any(c["cell_type"] == "markdown" for c in nb["cells"])


def _outputs(nb, start: str) -> str:
    """The text/plain results of the code cell whose source starts with `start`."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start))
    return "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's own temporary folder
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny ops on few cores: one thread each
    before = sorted(p.name for p in TUTORIALS.iterdir())
    nb = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    assert sorted(p.name for p in TUTORIALS.iterdir()) == before
    work = [p for p in tmp_path.iterdir() if p.name.startswith("nettle-tutorial-")]
    assert len(work) == 1  # what it writes goes there (the measure notebook writes nothing)
    if name == "measure":  # the hand count of the first conv layer
        assert _outputs(nb, "first = next(") == "(18432, 18432)"
    if name == "inspect":  # integrated gradients: a completeness gap far below one logit
        assert float(_outputs(nb, "from nettle.inspect.attributions").split("(")[1][:-1]) < 0.05
    if name == "sweeps":
        assert _outputs(nb, "from nettle.experiment import run_sweep").endswith(", {})")
