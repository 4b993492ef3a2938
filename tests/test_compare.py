"""`cnnlab compare-optimizers`: fair starts, a report that agrees with its runs, failures and resumes handled."""

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnlab.training import tf_loop as loop
from cnnlab.rundir import files as run_files
from cnnlab.cli import main
from cnnlab.search.optimizer_specs import DEFAULT_OPTIMIZERS, parse_optimizer_spec, parse_optimizer_specs
from cnnlab.config.experiment import load_config
from cnnlab.runtime.cores import usable_cores
from cnnlab.errors import ConfigError

from conftest import TINY_DIGITS, assert_one_line_error

FAILING = "sgd:learning_rate=1e30"  # diverges to a NaN loss in the first epoch on TINY_DIGITS


def compare(config_path, runs_dir, *args):
    return CliRunner().invoke(main, ["compare-optimizers", str(config_path), "--runs-dir", str(runs_dir), "--epochs", "1", *map(str, args)])


def only_dir(folder):
    (path,) = [p for p in Path(folder).iterdir() if p.is_dir()]
    return path


def run_dirs(compare_dir, run_name):
    return sorted(p for p in compare_dir.iterdir() if p.is_dir() and p.name.startswith(f"{run_name}-2"))


def read_summary(compare_dir):
    with open(compare_dir / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def weights_in(path):
    """Every array of a .weights.h5 file, by its path inside the file."""
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY_DIGITS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def comparison(tiny_path, tmp_path_factory):
    """Two optimizers and one that diverges, one after another in this process, trained once for the module."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = compare(tiny_path, runs_dir, "-o", "adam", "-o", "sgd+momentum", "-o", FAILING)
    assert result.exit_code == 0, result.output
    return only_dir(runs_dir), result.output


@pytest.fixture(scope="module")
def parallel(tiny_path, tmp_path_factory):
    """Two optimizers x two seeds, trained two at a time in worker processes."""
    runs_dir = tmp_path_factory.mktemp("runs")
    result = compare(tiny_path, runs_dir, "-o", "adam", "-o", "sgd", "--repeats", "2", "--jobs", "2")
    assert result.exit_code == 0, result.output
    return only_dir(runs_dir), result.output


# ---------------------------------------------------------------- what it writes


def test_the_comparison_folder_holds_the_reports_and_one_run_per_optimizer(comparison):
    compare_dir, output = comparison
    assert compare_dir.name.startswith("compare-tiny-")
    files = sorted(p.name for p in compare_dir.iterdir() if p.is_file())
    assert files == ["compare.json", "initial-s7.weights.h5", "summary.csv", "summary.md", "train_loss.png", "val_accuracy.png", "val_loss.png"]
    folders = sorted(p.name.rsplit("-s7-", 1)[0] for p in compare_dir.iterdir() if p.is_dir())
    assert folders == ["adam", "sgd-learning_rate-1e30", "sgd-momentum"]
    assert output.strip().endswith(f"Comparison: {compare_dir}")


def test_each_run_folder_is_an_ordinary_run(comparison):
    compare_dir, _ = comparison
    (run_dir,) = run_dirs(compare_dir, "adam-s7")
    assert run_files.read_status(run_dir).state == "completed"
    assert (run_dir / "best.keras").is_file() and (run_dir / "metrics.json").is_file()
    config = load_config(run_dir / "config.yaml")
    assert (config.name, config.seed, config.compile.optimizer.name, dict(config.compile.optimizer.kwargs)) == ("adam-s7", 7, "adam", {})


def test_optimizers_of_one_seed_start_from_the_same_saved_weights(comparison):
    compare_dir, _ = comparison
    (adam,) = run_dirs(compare_dir, "adam-s7")
    (momentum,) = run_dirs(compare_dir, "sgd-momentum-s7")
    shared = weights_in(compare_dir / "initial-s7.weights.h5")
    assert_same_weights(weights_in(adam / "initial.weights.h5"), shared)
    assert_same_weights(weights_in(momentum / "initial.weights.h5"), shared)


def test_each_seed_has_its_own_initial_weights(parallel):
    compare_dir, _ = parallel
    first, second = weights_in(compare_dir / "initial-s7.weights.h5"), weights_in(compare_dir / "initial-s8.weights.h5")
    assert first.keys() == second.keys()
    assert any(not np.array_equal(first[key], second[key]) for key in first)
    (sgd_s8,) = run_dirs(compare_dir, "sgd-s8")
    assert_same_weights(weights_in(sgd_s8 / "initial.weights.h5"), second)


def test_the_summary_has_one_row_per_optimizer_equal_to_its_runs_metrics(comparison):
    compare_dir, _ = comparison
    rows = {row["optimizer"]: row for row in read_summary(compare_dir)}
    assert sorted(rows) == ["adam", "sgd+momentum", FAILING]
    for label, run_name in (("adam", "adam-s7"), ("sgd+momentum", "sgd-momentum-s7")):
        (run_dir,) = run_dirs(compare_dir, run_name)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        row = rows[label]
        assert float(row["best_val_accuracy_mean"]) == metrics["best"]["val_accuracy"]
        assert float(row["best_val_loss_mean"]) == metrics["best"]["val_loss"]
        assert float(row["best_epoch_mean"]) == metrics["best_epoch"]
        assert float(row["epochs_run_mean"]) == metrics["epochs_run"]
        assert float(row["test_accuracy_mean"]) == metrics["test"]["accuracy"]
        assert float(row["wall_time_per_epoch_s_mean"]) == metrics["fit_time_s"] / metrics["fit_epochs"]
        assert row["best_val_accuracy_std"] == "" and row["runs_completed"] == "1"


def test_the_summary_is_sorted_best_first_with_failures_last(comparison):
    compare_dir, _ = comparison
    rows = read_summary(compare_dir)
    accuracies = [float(row["best_val_accuracy_mean"]) for row in rows[:2]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [row["rank"] for row in rows] == ["1", "2", ""]
    assert rows[-1]["optimizer"] == FAILING


def test_the_best_run_reaches_95_percent_of_the_best_accuracy(comparison):
    compare_dir, _ = comparison
    best = read_summary(compare_dir)[0]
    assert best["epochs_to_95pct_mean"] == "1.0" and best["runs_reaching_95pct"] == "1"


def test_the_table_is_printed_and_written_to_summary_md(comparison):
    compare_dir, output = comparison
    table = [line for line in output.splitlines() if line.startswith("|")]
    (run_dir,) = run_dirs(compare_dir, "adam-s7")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == [
        "#", "optimizer", "runs", f"best val acc (n={metrics['num_val']})", "best val loss", "best epoch", "stopped at",
        f"test acc (n={metrics['num_test']})", "epochs to 95%", "s/epoch"]
    assert len(table) == 2 + 3
    assert "\n".join(table) in (compare_dir / "summary.md").read_text()


def test_each_runs_accuracy_is_given_with_its_interval_in_progress_and_runs_table(comparison):
    """The progress line and summary.md's Runs table carry the run's own metrics.json interval, not the mean's spread."""
    compare_dir, output = comparison
    (run_dir,) = run_dirs(compare_dir, "adam-s7")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    val = metrics["intervals"]["best"]["val_accuracy"]
    low, high = f"{val['low']:.3f}", f"{val['high']:.3f}"
    accuracy = f"{metrics['best']['val_accuracy']:.3f}"
    assert f"adam (seed 7): val_accuracy {accuracy} ({val['correct']}/{val['n']}, 95% CI {low}–{high}), val_loss" in output
    (row,) = [line for line in (compare_dir / "summary.md").read_text().splitlines() if f" {run_dir.name} " in line]
    assert f" {accuracy} ({low}–{high}, n={val['n']}) " in row
    assert f"Val accuracies are measured on {val['n']} images" in (compare_dir / "summary.md").read_text()


def test_runs_gives_the_comparisons_best_accuracy_with_its_interval(comparison):
    compare_dir, _ = comparison
    listed = json.loads(CliRunner().invoke(main, ["runs", "--runs-dir", str(compare_dir.parent), "--json"]).output)
    (group,) = listed["sweeps_and_comparisons"]
    best_dir = compare_dir / group["best_run"]
    metrics = json.loads((best_dir / "metrics.json").read_text())
    val = metrics["intervals"]["best"]["val_accuracy"]
    assert (group["best"], group["best_n"]) == (metrics["best"]["val_accuracy"], metrics["num_val"])
    table = CliRunner().invoke(main, ["runs", "--runs-dir", str(compare_dir.parent)]).output
    (line,) = [line for line in table.splitlines() if line.startswith(compare_dir.name)]
    assert f" {group['best']:.3f} ({val['low']:.3f}–{val['high']:.3f}, n={val['n']}) " in line


@pytest.mark.parametrize("name", ["val_accuracy.png", "val_loss.png", "train_loss.png"])
def test_comparison_plots_are_nonblank_pngs(comparison, name):
    compare_dir, _ = comparison
    with Image.open(compare_dir / name) as image:
        assert image.format == "PNG"
        assert image.size == (720, 460)
        assert np.asarray(image.convert("L")).std() > 0


# ---------------------------------------------------------------- robustness


def test_a_diverging_optimizer_is_reported_and_the_others_complete(comparison):
    compare_dir, output = comparison
    assert f"[3/3] {FAILING} (seed 7): FAILED: loss became NaN at epoch 1" in output
    assert "1 of 3 runs failed" in output
    row = read_summary(compare_dir)[-1]
    assert row["runs_completed"] == "0" and row["runs_failed"] == "1"
    assert row["failure"].startswith("seed 7: loss became NaN at epoch 1")
    states = {p.name.rsplit("-s7-", 1)[0]: run_files.read_status(p).state for p in compare_dir.iterdir() if p.is_dir()}
    assert states == {"adam": "completed", "sgd-momentum": "completed", "sgd-learning_rate-1e30": "failed"}


def test_resume_keeps_completed_runs_and_redoes_the_others(comparison, tiny_path, tmp_path):
    source, _ = comparison
    compare_dir = tmp_path / source.name
    shutil.copytree(source, compare_dir)
    kept = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in compare_dir.iterdir() if p.is_dir() and run_files.read_status(p).state == "completed"}
    result = compare(tiny_path, tmp_path / "unused", "-o", "adam", "-o", "sgd+momentum", "-o", FAILING, "--resume", compare_dir)
    assert result.exit_code == 0, result.output
    assert {name: (compare_dir / name / "metrics.json").stat().st_mtime_ns for name in kept} == kept
    assert len(run_dirs(compare_dir, "sgd-learning_rate-1e30-s7")) == 2  # the failed run is trained again, beside the old one
    assert result.output.count("completed earlier, kept") == 2
    assert not (tmp_path / "unused").exists()


def test_resume_refuses_a_comparison_made_with_other_settings(comparison, tiny_path, tmp_path):
    compare_dir, _ = comparison
    before = sorted(p.name for p in compare_dir.iterdir())
    result = compare(tiny_path, tmp_path, "-o", "adam", "--batch-size", "32", "--resume", compare_dir)
    assert_one_line_error(result, f"--resume {compare_dir}: was made with different settings (train.batch_size differs)")
    assert sorted(p.name for p in compare_dir.iterdir()) == before


def test_parallel_jobs_complete_every_run(parallel):
    compare_dir, output = parallel
    assert "4 runs to train, 2 at a time" in output
    assert sorted(p.name.rsplit("-", 2)[0] for p in compare_dir.iterdir() if p.is_dir()) == ["adam-s7", "adam-s8", "sgd-s7", "sgd-s8"]
    assert all(run_files.read_status(p).state == "completed" for p in compare_dir.iterdir() if p.is_dir())


@pytest.mark.tensorflow_only  # split batches and threads per operation are cnnlab's TensorFlow loop
def test_each_worker_keeps_its_split_and_threads_within_its_share_of_the_cores(parallel, tiny_path):
    compare_dir, _ = parallel
    share = max(1, usable_cores() // 2)  # two jobs: one core each on a 2-core machine
    parts = loop.batch_parts(load_config(tiny_path), cores=share, gpus=0)
    for run_dir in (p for p in compare_dir.iterdir() if p.is_dir()):
        env = json.loads((run_dir / run_files.ENV).read_text())
        assert (env["batch_parts"], env["threads_per_op"]) == (parts, max(1, share // parts)), run_dir.name


def test_a_bad_core_share_is_refused_before_any_folder_exists(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CORES", "none")
    result = compare(tiny_path, tmp_path / "runs", "-o", "adam")
    assert_one_line_error(result, "CNNLAB_CORES: expected a whole number of cores, at least 1 (unset it to use every core the process may use); received 'none'")
    assert not (tmp_path / "runs").exists()


def test_repeats_report_mean_and_std_over_seeds(parallel):
    compare_dir, output = parallel
    rows = {row["optimizer"]: row for row in read_summary(compare_dir)}
    accuracies = [json.loads((run_dir / "metrics.json").read_text())["best"]["val_accuracy"]
                  for seed in (7, 8) for run_dir in run_dirs(compare_dir, f"adam-s{seed}")]
    assert float(rows["adam"]["best_val_accuracy_mean"]) == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert float(rows["adam"]["best_val_accuracy_std"]) == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
    assert rows["adam"]["runs_completed"] == "2"
    assert " ± " in output


def test_an_unknown_optimizer_is_refused_before_any_folder_exists(tiny_path, tmp_path):
    result = compare(tiny_path, tmp_path / "runs", "-o", "adam", "-o", "rmsprob")
    assert_one_line_error(result, "--optimizer rmsprob: unknown optimizer 'rmsprob'. Did you mean rmsprop? Valid names: adadelta, ")
    assert result.output.rstrip().endswith(", or the preset sgd+momentum")
    assert not (tmp_path / "runs").exists()


def test_an_unknown_optimizer_argument_is_refused_before_any_folder_exists(tiny_path, tmp_path):
    result = compare(tiny_path, tmp_path / "runs", "-o", "adam:learning_rat=0.1")
    assert_one_line_error(result, "--optimizer adam:learning_rat=0.1: learning_rat: unknown argument of Adam (did you mean learning_rate?)")
    assert not (tmp_path / "runs").exists()


def test_the_same_optimizer_twice_is_refused(tiny_path, tmp_path):
    result = compare(tiny_path, tmp_path / "runs", "-o", "adam", "-o", "Adam")
    assert_one_line_error(result, "--optimizer adam: is given twice")


def test_a_comparison_whose_every_run_fails_is_an_error(tiny_path, tmp_path):
    result = compare(tiny_path, tmp_path, "-o", FAILING)
    assert result.exit_code == 2, result.output
    compare_dir = only_dir(tmp_path)
    assert result.output.strip().splitlines()[-1] == (f"Error: every run of the comparison failed; see {compare_dir / 'summary.md'}; "
                                                      "1 of 1 with: loss became NaN at epoch 1; try a smaller learning rate")
    assert read_summary(compare_dir)[0]["runs_failed"] == "1"


def test_resume_refuses_a_folder_that_is_not_a_comparison(tiny_path, tmp_path):
    result = compare(tiny_path, tmp_path, "-o", "adam", "--resume", tmp_path)
    assert_one_line_error(result, f"--resume {tmp_path}: not a comparison folder (no compare.json)")


# ---------------------------------------------------------------- optimizer specs


def test_a_spec_reads_keyword_arguments_as_numbers():
    spec = parse_optimizer_spec("SGD: learning_rate=1e-2, momentum=0.9, nesterov=true")
    assert (spec.label, spec.name, spec.kwargs) == ("sgd:learning_rate=1e-2,momentum=0.9,nesterov=true", "sgd",
                                                    {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True})
    assert spec.slug == "sgd-learning_rate-1e-2-momentum-0.9-nesterov-true"


def test_the_momentum_preset_is_sgd_with_momentum():
    spec = parse_optimizer_spec("sgd+momentum:learning_rate=0.05")
    assert (spec.label, spec.name, spec.kwargs) == ("sgd+momentum:learning_rate=0.05", "sgd", {"momentum": 0.9, "learning_rate": 0.05})


def test_no_specs_means_the_default_set():
    assert [spec.label for spec in parse_optimizer_specs(())] == list(DEFAULT_OPTIMIZERS)


def test_a_spec_without_values_is_refused():
    with pytest.raises(ConfigError, match=r"^--optimizer adam:lr: expected NAME or NAME:KEY=VALUE"):
        parse_optimizer_spec("adam:lr")



def test_an_integer_learning_rate_is_read_as_a_float():
    assert parse_optimizer_spec("sgd:learning_rate=1").kwargs == {"learning_rate": 1.0}
    assert type(parse_optimizer_spec("sgd:learning_rate=1").kwargs["learning_rate"]) is float
