"""notebooks/quickstart.ipynb runs top to bottom on this environment's kernel (nbclient), so it cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import need_fashion_mnist

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


def test_outputs_are_cleared_in_git():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    need_fashion_mnist()
    monkeypatch.setenv("GANFORGE_NOTEBOOK_SECONDS", "8")  # the budget override: seconds of training, not a minute
    src = Path(__file__).parents[1] / "src"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # "python3" is the kernel of the interpreter running the tests (ipykernel's native spec): the project's own
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    if os.environ.get("GANFORGE_KEEP_NOTEBOOK"):  # to look at what a reader sees
        nbformat.write(nb, os.environ["GANFORGE_KEEP_NOTEBOOK"])
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # real data, samples, walk, edits: grids a reader sees
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "max abs difference from PyTorch" in text and "model.safetensors" in text and "fid" in text
