"""Every lesson as a Jupyter notebook: generated from its module, executed by a real kernel
(nbclient + ipykernel), its pictures displayed inline."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebooks run in; imported so its absence fails)
import nbclient
import nbformat
import pytest

from viz import lessons
from viz.__main__ import main
from viz.notebook import write_notebook

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec that runs this very Python (a fresh venv may have none of its own,
    and a system-wide `python3` spec may point at another interpreter)."""
    kernels = tmp_path_factory.mktemp("jupyter") / "kernels" / "microtensor-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "microtensor tests", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(kernels.parents[1]), old]))
    yield "microtensor-test"
    if old is None:
        del os.environ["JUPYTER_PATH"]
    else:
        os.environ["JUPYTER_PATH"] = old


def test_cli_writes_a_valid_notebook(tmp_path, capsys):
    assert main(["lesson", "softmax", "--notebook", "--out", str(tmp_path)]) == 0
    path = tmp_path / "softmax.ipynb"
    assert f"wrote {path}" in capsys.readouterr().out
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert lessons.get("softmax").SUMMARY in notebook.cells[0].source
    # The literate source, cell for cell: its parameters cell, and code a learner edits.
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata["tags"] and "html = True" in code[0].source
    assert any("y = mt.softmax(mt.tensor(x), axis=-1).data" in cell.source for cell in code)


@pytest.mark.parametrize("name", lessons.names())
def test_every_lesson_notebook_runs_and_shows_its_pictures(name, tmp_path, kernel_name,
                                                           monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(write_notebook(name, tmp_path / f"{name}.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert sum(cell.cell_type == "code" for cell in notebook.cells) >= 8   # cells to edit
    client = nbclient.NotebookClient(notebook, kernel_name=kernel_name, timeout=600,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError, with the traceback, if a cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "✓" in text and "check failed" not in text
    shown = [output["data"] for output in outputs if "data" in output]
    files = list((tmp_path / "lesson-output" / name).iterdir())
    svgs = [path for path in files if path.suffix == ".svg"]
    assert len([d for d in shown if "image/svg+xml" in d]) == len(svgs) > 0
    players = [path for path in files if path.suffix == ".html"]
    iframes = [d["text/html"] for d in shown if "<iframe srcdoc=" in d.get("text/html", "")]
    assert len(iframes) == len(players)
    if name == "backprop":
        assert iframes and "backward pass, step by step" in iframes[0]
