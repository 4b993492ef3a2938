"""End to end: `cnnlab train` on real data leaves a complete, self-consistent run folder."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from cnnlab.rundir import files as run_files
from cnnlab.cli import main
from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import preprocessing_for

from conftest import CONFIGS, TINY_DIGITS, train_config

RUN_FILES = ["config.yaml", "model_summary.txt", "best.keras", "history.csv", "metrics.json", "class_names.json",
             "env.json", "status", "loss.png", "accuracy.png", "preprocessing.json"]


def only_run(runs_dir):
    (run_dir,) = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The shipped digits config, trained for 2 epochs once for all tests of this module."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = train_config(CONFIGS / "digits_cnn.yaml", runs_dir, "--epochs", "2", check=False)
    assert result.exit_code == 0, result.output
    return only_run(runs_dir), result.output


def test_the_run_folder_has_every_file(digits_run):
    run_dir, output = digits_run
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(RUN_FILES)
    assert run_dir.name.startswith("digits_cnn-")
    assert f"Run: {run_dir}" in output
    assert run_files.read_status(run_dir).state == "completed"


def test_history_has_one_row_per_epoch_and_metrics_agree_with_it(digits_run):
    run_dir, _ = digits_run
    history = run_files.read_history(run_dir / "history.csv")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert history["epoch"] == [1, 2]
    assert metrics["epochs_run"] == 2
    best = metrics["best_epoch"]
    assert history["val_loss"][best - 1] == min(history["val_loss"])
    assert metrics["best"]["val_accuracy"] == pytest.approx(history["val_accuracy"][best - 1])
    assert metrics["final"]["loss"] == pytest.approx(history["loss"][-1])
    assert metrics["num_train"] + metrics["num_val"] + metrics["num_test"] == 1797
    assert metrics["images_per_s"] > 0


def test_best_model_scores_the_test_metrics_it_reports(digits_run):
    import keras

    run_dir, _ = digits_run
    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    model = keras.models.load_model(run_dir / "best.keras")
    scores = model.evaluate(make_dataset(splits.x_test, splits.y_test, preprocessing_for(config.data), 64), verbose=0, return_dict=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert scores["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


def test_metrics_json_gives_each_held_out_accuracy_its_count_and_wilson_interval(digits_run):
    """n is the split's size and `correct` the best model's own count of right answers on it, not a rounding of a rounding."""
    import keras

    run_dir, _ = digits_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    val, test = metrics["intervals"]["best"]["val_accuracy"], metrics["intervals"]["test"]["accuracy"]
    assert val["n"] == metrics["num_val"] and test["n"] == metrics["num_test"]
    assert val["correct"] / val["n"] == pytest.approx(metrics["best"]["val_accuracy"], abs=1e-6)
    assert val["low"] < metrics["best"]["val_accuracy"] < val["high"]
    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    model = keras.models.load_model(run_dir / "best.keras")
    predicted = model.predict(make_dataset(splits.x_test, splits.y_test, preprocessing_for(config.data), 64), verbose=0).argmax(axis=1)
    assert test["correct"] == int((predicted == splits.y_test).sum())
    assert test["low"] < metrics["test"]["accuracy"] < test["high"]


def test_train_prints_accuracies_with_their_count_and_interval(digits_run):
    run_dir, output = digits_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    val = metrics["intervals"]["best"]["val_accuracy"]
    expected = (f"Best val_accuracy: {metrics['best']['val_accuracy']:.3f} ({val['correct']}/{val['n']}, "
                f"95% CI {val['low']:.3f}–{val['high']:.3f})")
    assert expected in output.splitlines()
    assert f"Best val_loss: {metrics['best']['val_loss']:.4f}" in output.splitlines()  # a loss has no interval


def test_resolved_config_is_stored_and_reloads(digits_run):
    run_dir, _ = digits_run
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["train"]["epochs"] == 2  # the --epochs override is what the run records
    assert stored["train"]["callbacks"]["early_stopping"]["patience"] == 5
    assert load_config(run_dir / "config.yaml").name == "digits_cnn"


def test_plots_are_real_pngs(digits_run):
    run_dir, _ = digits_run
    for name in ("loss.png", "accuracy.png"):
        with Image.open(run_dir / name) as image:
            assert image.format == "PNG"
            assert image.size[0] >= 400 and image.size[1] >= 300
            assert np.asarray(image.convert("L")).std() > 0


def test_run_description_files(digits_run):
    run_dir, _ = digits_run
    assert json.loads((run_dir / "class_names.json").read_text()) == [str(i) for i in range(10)]
    env = json.loads((run_dir / "env.json").read_text())
    assert env["seed"] == 42 and env[env["backend"]] and env["keras"].startswith("3.")
    assert "Total params: 85,066" in (run_dir / "model_summary.txt").read_text()
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    assert prep["image_shape"] == [8, 8, 1] and prep["model_input_shape"] == [8, 8, 1]


def test_seeded_runs_are_reproducible(tiny_config, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert train_config(tiny_config, first, check=False).exit_code == 0
    assert train_config(tiny_config, second, check=False).exit_code == 0
    h1 = run_files.read_history(only_run(first) / "history.csv")
    h2 = run_files.read_history(only_run(second) / "history.csv")
    assert h1.pop("time_s") and h2.pop("time_s")  # seconds per epoch differ; everything else must not
    assert h1 == h2


def test_runs_never_share_a_folder(tiny_config, tmp_path):
    assert train_config(tiny_config, tmp_path, "--epochs", "1", check=False).exit_code == 0
    assert train_config(tiny_config, tmp_path, "--epochs", "1", check=False).exit_code == 0
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_create_run_dir_adds_a_counter_within_the_same_second(tmp_path):
    from datetime import datetime

    when = datetime(2026, 1, 2, 3, 4, 5)
    names = [run_files.create_run_dir(tmp_path, "x", when).name for _ in range(3)]
    assert names == ["x-20260102-030405", "x-20260102-030405-2", "x-20260102-030405-3"]


def test_a_diverging_run_is_marked_failed_with_the_reason(write_config, tmp_path):
    path = write_config(TINY_DIGITS + "compile: {optimizer: {name: sgd, learning_rate: 1.0e+30}}\n")
    result = train_config(path, tmp_path / "runs", check=False)
    assert result.exit_code == 2
    assert "loss became NaN at epoch 1" in result.output
    status = run_files.read_status(only_run(tmp_path / "runs"))
    assert status.state == "failed" and "NaN" in status.reason


def test_lenet_pads_digits_to_its_input(write_config, tmp_path):
    text = (TINY_DIGITS.replace("[8, 8, 1]", "[12, 12, 1]").replace("  test_split: 0.2", "  test_split: 0.2\n  pad_to: [12, 12]"))
    result = train_config(write_config(text), tmp_path, "--epochs", "1", check=False)
    assert result.exit_code == 0, result.output
    prep = json.loads((only_run(tmp_path) / "preprocessing.json").read_text())
    assert prep["pad_to"] == [12, 12] and prep["image_shape"] == [8, 8, 1]


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist (CI installs it)")
def test_fashion_mnist_cnn_trains_one_epoch_offline(tmp_path):
    result = train_config(CONFIGS / "fashion_mnist_cnn.yaml", tmp_path, "--epochs", "1", check=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["num_train"] == 48_000 and metrics["num_val"] == 12_000 and metrics["num_test"] == 10_000
    assert metrics["best"]["val_accuracy"] > 0.8
    assert metrics["test"]["accuracy"] > 0.8


def test_an_accuracy_logged_under_another_name_is_plotted_and_listed(tmp_path):
    """Keras logs `metrics: [sparse_categorical_accuracy]` under that name; the plot and `cnnlab runs` still find it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DIGITS.replace("epochs: 2", "epochs: 1") + "compile:\n  metrics: [sparse_categorical_accuracy]\n")
    assert train_config(config, tmp_path / "runs", check=False).exit_code == 0
    run_dir = only_run(tmp_path / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "accuracy.png").is_file()
    (row,) = json.loads(CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path / "runs"), "--json"]).output)
    assert row["best_val_accuracy"] == metrics["best"]["val_sparse_categorical_accuracy"]
    assert row["test_accuracy"] == metrics["test"]["sparse_categorical_accuracy"]


def test_train_ignores_a_sweep_section_and_keeps_it_in_the_run_config(write_config, tmp_path):
    sweep = "sweep:\n  trials: 3\n  params:\n    train.batch_size: {choice: [16, 32]}\n"
    result = train_config(write_config(TINY_DIGITS + sweep), tmp_path / "runs", "--epochs", "1", check=False)
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path / "runs")
    assert run_files.read_status(run_dir).state == "completed"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["sweep"] == {"trials": 3, "params": {"train.batch_size": {"choice": [16, 32]}}}
    assert saved["train"]["batch_size"] == 64
