"""`cnnlab cv`: folds that partition the training pool, and out-of-fold figures that agree with the fold runs."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnlab.config.experiment import load_config
from cnnlab.config.intervals import wilson_interval
from cnnlab.data.sources import load_dataset, training_pool
from cnnlab.search.cv_report import read_oof

from conftest import TINY_DIGITS, assert_one_line_error, run_cli

FOLDS = 3


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """One 3-fold cross-validation of the tiny digits config, one epoch a fold, shared by the tests below."""
    root = tmp_path_factory.mktemp("cv")
    config = root / "tiny.yaml"
    config.write_text(TINY_DIGITS)
    result = run_cli("cv", config, "--folds", FOLDS, "--epochs", 1, "--runs-dir", root / "runs")
    assert result.exit_code == 0, result.output
    (cv_dir,) = (root / "runs").iterdir()
    return cv_dir, result.output


def fold_dirs(cv_dir):
    return sorted(path for path in cv_dir.iterdir() if path.is_dir() and path.name.startswith("fold-"))


def weights_in(path):
    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_folds_partition_the_training_pool_stratified_and_each_run_remakes_its_own(cv_run):
    cv_dir, _ = cv_run
    runs = fold_dirs(cv_dir)
    assert len(runs) == FOLDS
    first = load_config(runs[0] / "config.yaml")
    _, pool_labels, _ = training_pool(first.data, first.seed)  # the test hold-out (data.test_split 0.2) is not in it
    assert len(pool_labels) == 1437  # 1797 digits less the 360 test images

    positions = []
    for index, run_dir in enumerate(runs, start=1):
        config = load_config(run_dir / "config.yaml")
        assert (config.train.fold.index, config.train.fold.of) == (index, FOLDS)
        oof = read_oof(run_dir)
        # the run's own config re-makes the validation fold the cv scored, image for image
        splits = load_dataset(config.data, config.train.validation_split, config.seed, config.train.fold)
        np.testing.assert_array_equal(splits.y_val, pool_labels[oof["position"]])
        np.testing.assert_array_equal(oof["label"], pool_labels[oof["position"]])
        assert len(splits.y_train) + len(splits.y_val) == len(pool_labels)
        # stratified: each class's share of the fold is its share of the pool, within one image
        expected = np.bincount(pool_labels, minlength=10) / FOLDS
        assert np.all(np.abs(np.bincount(oof["label"], minlength=10) - expected) <= 1)
        positions.append(oof["position"])
        # every fold started from the cv's one set of initial weights
        initial, copy = weights_in(cv_dir / "initial.weights.h5"), weights_in(run_dir / "initial.weights.h5")
        assert initial.keys() == copy.keys() and initial
        for key in initial:
            np.testing.assert_array_equal(initial[key], copy[key])

    everything = np.concatenate(positions)
    assert len(everything) == len(pool_labels)
    assert sorted(everything.tolist()) == list(range(len(pool_labels)))  # disjoint, and each pool image once


def test_pooled_out_of_fold_accuracy_is_the_folds_correct_over_the_pool(cv_run):
    cv_dir, output = cv_run
    summary = json.loads((cv_dir / "summary.json").read_text())
    correct = 0
    for row, run_dir in zip(summary["per_fold"], fold_dirs(cv_dir)):
        oof = read_oof(run_dir)
        fold_correct = int((oof["label"] == oof["predicted"]).sum())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        # the fold's best model scores its fold as training did at its best epoch
        assert fold_correct == round(metrics["best"]["val_accuracy"] * metrics["num_val"])
        assert row["oof_correct"] == fold_correct
        correct += fold_correct
    oof = summary["out_of_fold"]
    assert (oof["n"], oof["correct"]) == (1437, correct)
    assert oof["accuracy"] == pytest.approx(correct / 1437)
    assert oof["low"] < oof["accuracy"] < oof["high"]
    counts = np.array(summary["confusion_matrix"]["counts"])
    assert counts.shape == (10, 10) and counts.sum() == 1437 and np.trace(counts) == correct
    accuracies = [row["val_accuracy"] for row in summary["per_fold"]]
    assert summary["val_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert summary["val_accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert f"Out-of-fold accuracy: {correct / 1437:.4f} ({correct}/1437, 95% CI" in output
    assert (cv_dir / "confusion_matrix.png").is_file() and (cv_dir / "summary.md").is_file()


def test_runs_lists_the_cv_folder_and_its_fold_runs(cv_run):
    cv_dir, _ = cv_run
    result = run_cli("runs", "--runs-dir", cv_dir.parent, "--all", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    (group,) = listed["sweeps_and_comparisons"]
    assert (group["name"], group["kind"], group["runs"], group["completed"]) == (cv_dir.name, "cv", FOLDS, FOLDS)
    summary = json.loads((cv_dir / "summary.json").read_text())
    assert (group["best"], group["best_n"]) == (summary["out_of_fold"]["accuracy"], summary["out_of_fold"]["n"])
    table = run_cli("runs", "--runs-dir", cv_dir.parent).output
    (line,) = [line for line in table.splitlines() if line.startswith(cv_dir.name)]
    low, high = wilson_interval(summary["out_of_fold"]["correct"], summary["out_of_fold"]["n"])
    assert f" out_of_fold_accuracy  {group['best']:.3f} ({low:.3f}–{high:.3f}, n={summary['out_of_fold']['n']}) " in line
    assert sorted(row["name"] for row in listed["runs"]) == sorted(f"{cv_dir.name}/{p.name}" for p in fold_dirs(cv_dir))


@pytest.mark.parametrize("folds", [1, 0])
def test_fewer_than_two_folds_is_one_line(tiny_config, tmp_path, folds):
    result = run_cli("cv", tiny_config, "--folds", folds, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"--folds: expected an integer from 2 to 1000, received {folds}", exact=True)
    assert not (tmp_path / "runs").exists()


def test_more_folds_than_images_is_one_line_before_any_folder(tiny_config, tmp_path):
    result = run_cli("cv", tiny_config, "--folds", 1000, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "train.fold: cannot split 1437 samples into 1000 folds")
    assert not (tmp_path / "runs").exists()


def test_two_jobs_train_the_folds_in_worker_processes_and_pool_them_alike(tmp_path):
    """--jobs 2: each fold in its own worker process; the pooled figure still counts every pool image once."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DIGITS)
    result = run_cli("cv", config, "--folds", 2, "--epochs", 1, "--jobs", 2, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (cv_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((cv_dir / "summary.json").read_text())
    folds = fold_dirs(cv_dir)
    assert len(folds) == 2
    positions = np.concatenate([read_oof(run_dir)["position"] for run_dir in folds])
    assert sorted(positions.tolist()) == list(range(1437))
    assert summary["out_of_fold"]["correct"] == sum(int((read_oof(d)["label"] == read_oof(d)["predicted"]).sum()) for d in folds)


def test_resume_keeps_the_completed_folds_and_trains_only_the_missing_one(tmp_path):
    """A cross-validation stopped after two of three folds: --resume trains the third alone, and the pooled figure
    counts every pool image once, as an uninterrupted one does."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DIGITS)
    first = run_cli("cv", config, "--folds", FOLDS, "--epochs", 1, "--runs-dir", tmp_path / "runs")
    assert first.exit_code == 0, first.output
    (cv_dir,) = (tmp_path / "runs").iterdir()
    kept = fold_dirs(cv_dir)[:2]
    before = {path.name: (path / "oof.csv").read_bytes() for path in kept}
    import shutil

    shutil.rmtree(fold_dirs(cv_dir)[2])  # as if the run had been stopped before its third fold

    resumed = run_cli("cv", config, "--folds", FOLDS, "--epochs", 1, "--resume", cv_dir)
    assert resumed.exit_code == 0, resumed.output
    assert "1 to train" in resumed.output
    assert [line.endswith("(done before)") for line in resumed.output.splitlines() if line.startswith("[")] == [True, True, False]
    runs = fold_dirs(cv_dir)
    assert len(runs) == FOLDS and {path.name: (path / "oof.csv").read_bytes() for path in runs[:2]} == before
    summary = json.loads((cv_dir / "summary.json").read_text())
    positions = np.concatenate([read_oof(run_dir)["position"] for run_dir in runs])
    assert sorted(positions.tolist()) == list(range(summary["pool"]))
    assert summary["completed"] == FOLDS


def test_resume_with_other_folds_or_settings_is_one_line(cv_run, tmp_path):
    cv_dir, _ = cv_run
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_DIGITS)
    result = run_cli("cv", config, "--folds", 2, "--epochs", 1, "--resume", cv_dir)
    assert_one_line_error(result, f"--resume {cv_dir}: was made with different settings (--folds 3 there, 2 here)")
    result = run_cli("cv", config, "--folds", FOLDS, "--epochs", 2, "--resume", cv_dir)
    assert_one_line_error(result, f"--resume {cv_dir}: was made with different settings (train.epochs differs)")


CV_SWEPT = TINY_DIGITS + """\
sweep:
  trials: 2
  sampler: grid
  pruner: none
  metric: val_accuracy
  cv_folds: 2
  params:
    model.layers[0].Conv2D.filters: {choice: [2, 6]}
"""


def test_a_sweep_with_cv_folds_ranks_each_trial_by_every_fold(tmp_path):
    """sweep.cv_folds: 2: each trial is a cv folder of two fold runs; its value is the folds' best val_accuracy,
    pooled over the training pool (a count, so it has an interval), and best.yaml is the winner's config."""
    import csv

    from cnnlab.rundir.files import read_history

    config = tmp_path / "config.yaml"
    config.write_text(CV_SWEPT.replace("  epochs: 2", "  epochs: 1"))
    result = run_cli("sweep", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (sweep_dir,) = (tmp_path / "runs").glob("sweep-*")
    with open(sweep_dir / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["state"] for row in rows] == ["complete", "complete"]
    for row in rows:
        cv_dir = Path(row["run_dir"])
        assert cv_dir.name.startswith(f"cv-tiny-trial{int(row['number']):03d}-")
        folds = fold_dirs(cv_dir)
        assert len(folds) == 2
        filters = {load_config(d / "config.yaml").model.layers[0].kwargs["filters"] for d in folds}
        assert filters == {int(row["model.layers[0].Conv2D.filters"])}
        correct = sum(round(max(read_history(d / "history.csv")["val_accuracy"]) * len(read_oof(d)["position"])) for d in folds)
        assert float(row["value"]) == pytest.approx(correct / 1437, abs=1e-6)  # the pool: 1797 digits less the test split
        assert f"({correct}/1437, 95% CI" in result.output
    best = max(rows, key=lambda row: float(row["value"]))
    assert load_config(sweep_dir / "best.yaml").model.layers[0].kwargs["filters"] == int(best["model.layers[0].Conv2D.filters"])
    listed = json.loads(run_cli("runs", "--runs-dir", tmp_path / "runs", "--all", "--json").output)
    (group,) = listed["sweeps_and_comparisons"]
    assert (group["runs"], group["completed"], group["best_run"]) == (4, 4, Path(best["run_dir"]).name)
    assert group["best_n"] == 1437  # a cross-validated trial's value is measured on the whole pool
    assert sorted(row["name"] for row in listed["runs"]) == sorted(
        f"{sweep_dir.name}/{Path(row['run_dir']).name}/{fold.name}" for row in rows for fold in fold_dirs(Path(row["run_dir"])))


def test_check_says_the_sweep_is_cross_validated(write_config):
    config = write_config(CV_SWEPT)
    result = run_cli("check", config)
    assert result.exit_code == 0, result.output
    assert (f"{config}: sweep of 1 values, 2 trials, grid sampler, none pruner, maximize val_accuracy over 2 cross-validation "
            "folds") in result.output.splitlines()


def test_a_sweep_with_more_cv_folds_than_images_is_one_line_before_any_folder(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CV_SWEPT.replace("cv_folds: 2", "cv_folds: 1000"))
    result = run_cli("sweep", config, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "train.fold: cannot split 1437 samples into 1000 folds")
    assert not (tmp_path / "runs").exists()


def test_cv_folds_needs_a_validation_metric(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(CV_SWEPT.replace("metric: val_accuracy", "metric: accuracy"))
    result = run_cli("sweep", config, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{config}: sweep.metric: a cross-validated sweep (sweep.cv_folds) ranks trials by a "
                                  "validation metric, which every fold has; received 'accuracy'", exact=True)
