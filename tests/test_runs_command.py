"""`cnnlab runs` on run folders written by hand: newest first, JSON, broken runs shown, no TensorFlow."""

import json
import re
import subprocess
import sys

import pytest

from conftest import run_cli as run


def metrics(val_accuracy=0.9, test_accuracy=0.85, epochs=3, best=2, fit=12.34):
    return {"epochs_run": epochs, "best_epoch": best, "best": {"val_loss": 0.3, "val_accuracy": val_accuracy},
            "test": None if test_accuracy is None else {"accuracy": test_accuracy, "loss": 0.4}, "fit_time_s": fit,
            "fit_epochs": epochs, "epoch_time_s": fit / 2}


@pytest.fixture
def make_run(tmp_path):
    """Writes the small files of a run folder under tmp_path/runs, as train leaves them."""

    def make(name, config="tiny", status="completed\n", metrics_data=None, model=True, backend="tensorflow"):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"name: {config}\nseed: 1\n")
        (run_dir / "status").write_text(status)
        if metrics_data is not None:
            (run_dir / "metrics.json").write_text(json.dumps(metrics_data))
        if model:
            (run_dir / "best.keras").write_bytes(b"PK")
        if backend is not None:
            (run_dir / "env.json").write_text(json.dumps({"backend": backend}))
        return run_dir

    return make


def test_the_table_lists_runs_newest_first(make_run, tmp_path):
    make_run("tiny-20260101-120000", metrics_data=metrics(val_accuracy=0.5, test_accuracy=None), backend=None)
    make_run("tiny-20260101-120000-2", metrics_data=metrics(val_accuracy=0.75), backend="torch")
    make_run("digits_cnn-20260102-090000", config="digits_cnn", metrics_data=metrics(), backend="jax")
    result = run("runs", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "RUN                         CONFIG      BACKEND  STATUS     EPOCHS  BEST  BEST VAL ACC  TEST ACC  TRAIN TIME",
        "digits_cnn-20260102-090000  digits_cnn  jax      completed       3     2        0.9000    0.8500      12.3 s",
        "tiny-20260101-120000-2      tiny        torch    completed       3     2        0.7500    0.8500      12.3 s",
        "tiny-20260101-120000        tiny        -        completed       3     2        0.5000         -      12.3 s",
    ]


def test_a_run_from_before_backends_trained_on_tensorflow(make_run, tmp_path):
    run_dir = make_run("tiny-20260101-120000", metrics_data=metrics(), backend=None)
    (run_dir / "env.json").write_text(json.dumps({"keras": "3.15.1"}))
    result = run("runs", "--runs-dir", tmp_path / "runs", "--json")
    assert json.loads(result.output)[0]["backend"] == "tensorflow"


def test_json_gives_every_field(make_run, tmp_path):
    run_dir = make_run("tiny-20260101-120000", metrics_data=metrics())
    result = run("runs", "--runs-dir", tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{
        "name": "tiny-20260101-120000", "path": str(run_dir), "config": "tiny", "backend": "tensorflow", "status": "completed", "reason": None,
        "started": "2026-01-01T12:00:00", "epochs": 3, "best_epoch": 2, "best_val_accuracy": 0.9, "num_val": None,
        "test_accuracy": 0.85, "test_accuracy_from": "metrics.json", "num_test": None, "train_time_s": 12.34,
    }]


def test_accuracies_on_few_images_show_their_interval_and_n(make_run, tmp_path):
    """metrics.json's num_val and eval/test.json's num_images are the n of each accuracy; a run without them keeps 4 decimals."""
    run_dir = make_run("tiny-20260101-120000", metrics_data={**metrics(val_accuracy=109 / 150), "num_val": 150, "num_test": 40})
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "test.json").write_text(json.dumps({"accuracy": 0.875, "num_images": 40}))
    make_run("tiny-20260101-110000", metrics_data=metrics())
    lines = run("runs", "--runs-dir", tmp_path / "runs").output.splitlines()
    assert re.split(r" {2,}", lines[1])[-3:] == ["0.727 (0.650–0.792, n=150)", "0.875 (0.739–0.945, n=40)", "12.3 s"]
    assert lines[2].split()[-4:] == ["0.9000", "0.8500", "12.3", "s"]
    rows = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert [(row["num_val"], row["num_test"]) for row in rows] == [(150, 40), (None, None)]


def test_a_run_from_before_fit_time_was_recorded_shows_the_sum_of_its_epochs(make_run, tmp_path):
    old = {key: value for key, value in metrics(fit=12.34).items() if key not in ("fit_time_s", "fit_epochs", "epoch_time_s")}
    make_run("tiny-20260101-120000", metrics_data={**old, "wall_time_s": 9.87})
    (row,) = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert row["train_time_s"] == 9.87


def test_test_accuracy_comes_from_the_evaluation_when_there_is_one(make_run, tmp_path):
    run_dir = make_run("tiny-20260101-120000", metrics_data=metrics(test_accuracy=0.85))
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "test.json").write_text(json.dumps({"accuracy": 0.875, "loss": 0.3}))
    (row,) = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert (row["test_accuracy"], row["test_accuracy_from"]) == (0.875, "eval/test.json")


@pytest.mark.parametrize("name", ["acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy"])
def test_every_accuracy_name_fills_the_accuracy_columns(make_run, tmp_path, name):
    make_run("tiny-20260101-120000", metrics_data={"epochs_run": 3, "best_epoch": 2, "best": {"val_loss": 0.3, f"val_{name}": 0.9},
                                                   "test": {name: 0.85, "loss": 0.4}, "fit_time_s": 12.34})
    (row,) = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert (row["best_val_accuracy"], row["test_accuracy"]) == (0.9, 0.85)


def test_folders_and_files_that_are_not_runs_are_skipped(make_run, tmp_path):
    make_run("tiny-20260101-120000", metrics_data=metrics())
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "runs" / "notes" / "todo.txt").write_text("a folder, but not a run")
    (tmp_path / "runs" / "README").write_text("a file")
    rows = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert [row["name"] for row in rows] == ["tiny-20260101-120000"]


def test_a_broken_run_is_shown_as_broken_with_the_reason(make_run, tmp_path):
    run_dir = make_run("tiny-20260101-120000")
    (run_dir / "metrics.json").write_text("{ not json")
    make_run("tiny-20260101-130000", metrics_data=metrics())
    result = run("runs", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split()[:4] == ["tiny-20260101-120000", "tiny", "tensorflow", "broken"]
    assert lines[3].startswith(f"tiny-20260101-120000: broken: cannot read {run_dir / 'metrics.json'}: ")


def test_a_completed_run_without_its_model_is_broken(make_run, tmp_path):
    run_dir = make_run("tiny-20260101-120000", metrics_data=metrics(), model=False)
    (row,) = json.loads(run("runs", "--runs-dir", tmp_path / "runs", "--json").output)
    assert (row["status"], row["reason"]) == ("broken", f"{run_dir / 'best.keras'} is missing")


def test_running_and_failed_runs_show_their_state(make_run, tmp_path):
    make_run("tiny-20260101-120000", status="failed\nloss became NaN at epoch 1; try a smaller learning rate\n", model=False)
    make_run("tiny-20260101-130000", status="running\n", model=False)
    result = run("runs", "--runs-dir", tmp_path / "runs")
    lines = result.output.splitlines()
    assert lines[1].split() == ["tiny-20260101-130000", "tiny", "tensorflow", "running", "-", "-", "-", "-", "-"]
    assert lines[2].split() == ["tiny-20260101-120000", "tiny", "tensorflow", "failed", "-", "-", "-", "-", "-"]
    assert lines[3] == "tiny-20260101-120000: failed: loss became NaN at epoch 1; try a smaller learning rate"


def test_an_empty_runs_folder(tmp_path):
    result = run("runs", "--runs-dir", tmp_path)
    assert (result.exit_code, result.output) == (0, f"No runs in {tmp_path}.\n")


def test_a_missing_runs_folder(tmp_path):
    result = run("runs", "--runs-dir", tmp_path / "nope")
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'nope'}: runs folder not found; train a model with cnnlab train CONFIG --runs-dir {tmp_path / 'nope'}\n"


@pytest.mark.parametrize("args", [["runs"], ["predict", "--help"], ["evaluate", "--help"]])
def test_listing_runs_and_asking_for_help_do_not_import_tensorflow(make_run, tmp_path, args):
    make_run("tiny-20260101-120000", metrics_data=metrics())
    code = ("import sys; from click.testing import CliRunner; from cnnlab.cli import main; "
            f"r = CliRunner().invoke(main, {args!r} + ['--runs-dir', sys.argv[1]] * (sys.argv[2] == 'runs')); "
            "print(r.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs"), args[0]], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "False"]


def test_a_groups_best_accuracy_has_an_interval_only_where_best_n_counts_its_images():
    from cnnlab.tracking.tables import format_groups_table

    def row(metric, best):
        return {"name": "sweep-tiny-20260101-120000", "kind": "sweep", "runs": 3, "completed": 3, "metric": metric,
                "best": best, "best_n": 150, "best_run": "tiny-trial001-20260101-120100"}

    from cnnlab.config.intervals import wilson_interval

    cells = [re.split(r"\s{2,}", line)[5] for line in format_groups_table(
        [row("val_accuracy", 0.6), row("out_of_fold_accuracy", 0.6), row("accuracy", 0.6), row("val_loss", 0.6)]).splitlines()[1:]]
    # 90/150 has its interval; a training accuracy is not a count of the 150 validation images, nor is a loss
    low, high = wilson_interval(90, 150)
    assert cells == [f"0.600 ({low:.3f}–{high:.3f}, n=150)"] * 2 + ["0.6000"] * 2
