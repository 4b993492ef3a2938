"""The Python API as a notebook user meets it: docs/notebook.ipynb executed in a real Jupyter kernel (nbclient)."""

import csv
import json
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with the dev extra (nbclient)")
nbclient = pytest.importorskip("nbclient", reason="nbclient and ipykernel come with the dev extra")

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebook.ipynb"


def outputs_of(cell):
    """A code cell's result as text, and whether it showed a picture."""
    text = "".join(output.get("data", {}).get("text/plain", "") + output.get("text", "") for output in cell.outputs)
    return text, any("image/png" in output.get("data", {}) for output in cell.outputs)


def test_the_notebook_trains_plots_evaluates_and_predicts_in_a_real_kernel(tmp_path):
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)

    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = {cell.source.splitlines()[0]: cell for cell in notebook.cells if cell.cell_type == "code"}
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and (tmp_path / "digits.yaml").is_file()
    metrics = json.loads((run_dirs[0] / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    # what the notebook printed is what the run folder holds
    assert outputs_of(code['run.metrics["best"]'])[0] == repr(metrics["best"])
    with open(run_dirs[0] / "history.csv", newline="") as f:
        history = [float(row["val_loss"]) for row in csv.DictReader(f)]
    assert eval(outputs_of(code['run.history["val_loss"]'])[0]) == history and len(history) == 3
    assert outputs_of(code["run.plot();  # loss per epoch, training and validation, best epoch marked"])[1]  # shown inline
    evaluation = json.loads((run_dirs[0] / "eval" / "test.json").read_text())
    accuracy, num_images = eval(outputs_of(code["report = run.evaluate()"])[0])
    assert (accuracy, num_images) == (evaluation["accuracy"], evaluation["num_images"])
    top = eval(outputs_of(code["from PIL import Image, ImageDraw"])[0])
    assert len(top) == 3 and sum(entry["probability"] for entry in top) <= 1.0 + 1e-6
    assert outputs_of(code["cnnlab.load_run(run.path).status"])[0] == "'completed'"
