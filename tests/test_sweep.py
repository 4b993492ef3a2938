"""`cnnlab sweep`: a user's session with a tiny search space, on real Keras and a real Optuna study."""

import csv
import time

import keras
import optuna
import pytest

from pathlib import Path
from cnnlab.training import callbacks
from cnnlab.rundir import files as run_files, trained
from conftest import TINY_DIGITS, assert_one_line_error, run_cli

SWEPT = TINY_DIGITS.replace("  epochs: 2", "  epochs: 3").replace(
    "model:", "compile:\n  optimizer: {name: adam, learning_rate: 0.003}\nmodel:") + """\
sweep:
  trials: 3
  sampler: random
  pruner: none
  params:
    compile.optimizer.learning_rate: {float: [0.001, 0.01], log: true}
    model.layers[0].Conv2D.filters: {int: [2, 8], step: 2}
"""


def sweep(root, text, *args):
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(text)
    return run_cli("sweep", config, "--runs-dir", root / "runs", *args)


def only_sweep(root):
    (sweep_dir,) = (root / "runs").glob("sweep-*")
    return sweep_dir


def trial_rows(sweep_dir):
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_sweep_leaves_its_study_every_trial_as_a_run_and_a_best_config_that_trains_again(tmp_path):
    result = sweep(tmp_path, SWEPT)
    assert result.exit_code == 0, result.output
    sweep_dir = only_sweep(tmp_path)
    for name in ("study.db", "sweep.json", "config.yaml", "trials.csv", "summary.md", "best.yaml",
                 "optimization_history.png", "parallel_coordinate.png"):
        assert (sweep_dir / name).is_file(), name
    rows = trial_rows(sweep_dir)
    assert [row["state"] for row in rows] == ["complete"] * 3
    for row in rows:  # each trial is an ordinary run folder with its sampled values in its config
        run_dir = trained.load_trained_run(row["run_dir"])
        assert run_dir.config.compile.optimizer.kwargs["learning_rate"] == pytest.approx(float(row["compile.optimizer.learning_rate"]))
        assert run_dir.config.model.layers[0].kwargs["filters"] == int(row["model.layers[0].Conv2D.filters"])
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert study.metric_names == ["val_loss"]  # what optuna-dashboard labels the value with
    best = min(rows, key=lambda row: float(row["value"]))  # the default metric is the checkpoint's val_loss
    assert f"Best: trial {best['number']}, val_loss {float(best['value']):.4f}" in result.output
    listing = run_cli("runs", "--runs-dir", tmp_path / "runs").output.splitlines()
    (line,) = [line for line in listing if line.startswith(sweep_dir.name)]  # a loss has no interval: 4 decimals
    assert line.split()[-3:] == ["val_loss", f"{float(best['value']):.4f}", Path(best["run_dir"]).name]

    again = run_cli("train", sweep_dir / "best.yaml", "--runs-dir", tmp_path / "again", "-q")
    assert again.exit_code == 0, again.output
    (retrained,) = (tmp_path / "again").iterdir()
    history = run_files.read_history(retrained / "history.csv")
    assert min(history["val_loss"]) == pytest.approx(float(best["value"]), abs=1e-6)


def pooling_sweep(sizes):
    """A grid over the pooling size: pools larger than the 8×8 image cannot build."""
    return TINY_DIGITS + f"""\
sweep:
  trials: 2
  sampler: grid
  pruner: none
  params:
    model.layers[1].MaxPooling2D.pool_size: {{choice: {sizes}}}
"""


def test_a_trial_whose_sampled_config_cannot_build_fails_with_its_reason_and_the_sweep_goes_on(tmp_path):
    result = sweep(tmp_path, pooling_sweep([2, 16]))
    assert result.exit_code == 0, result.output
    rows = {row["model.layers[1].MaxPooling2D.pool_size"]: row for row in trial_rows(only_sweep(tmp_path))}
    assert rows["2"]["state"] == "complete"
    assert rows["16"]["state"] == "fail" and "model.layers" in rows["16"]["reason"]
    assert "1 failed" in result.output


def test_a_sweep_whose_every_trial_fails_ends_with_one_line(tmp_path):
    result = sweep(tmp_path, pooling_sweep([16, 32]))
    assert result.exit_code == 2
    sweep_dir = only_sweep(tmp_path)
    (line,) = result.stderr.splitlines()
    # the two pool sizes fail each in its own words, so the reason named is one of them
    assert line.startswith(f"Error: every trial of the sweep in {sweep_dir} failed (report in {sweep_dir / 'summary.md'}); "
                           "1 of 2 failed trials with: model.layers[1].MaxPooling2D.pool_size: cannot take its input of shape "
                           "(None, 8, 8, 4): "), line
    assert "Traceback" not in result.output


class CtrlCAfter(keras.callbacks.Callback):
    """Ctrl-C at the end of the second epoch of the first trial that reaches it."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_marks_the_running_trial_and_resume_finishes_the_trials(tmp_path, monkeypatch):
    make = callbacks.make_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "make_callbacks", lambda *args: make(*args) + [CtrlCAfter()])
        result = sweep(tmp_path, SWEPT)
    assert result.exit_code == 130, result.output
    sweep_dir = only_sweep(tmp_path)
    assert result.output.strip().splitlines()[-1] == (
        f"Error: sweep interrupted after 0 of 3 finished trials; resume with: cnnlab sweep --resume {sweep_dir}")
    (row,) = trial_rows(sweep_dir)
    assert row["state"] == "fail" and row["reason"] == "interrupted"
    assert run_files.read_status(row["run_dir"]).state == "interrupted"

    resumed = run_cli("sweep", "--resume", sweep_dir)
    assert resumed.exit_code == 0, resumed.output
    states = [row["state"] for row in trial_rows(sweep_dir)]
    assert states == ["fail", "complete", "complete", "complete"]


def test_pruning_stops_a_trial_that_is_worse_than_the_median_of_those_before(tmp_path):
    from cnnlab.config.experiment import load_config
    from cnnlab.config.schema import to_plain
    from cnnlab.search.space import parse_space
    from cnnlab.search.sweep import Objective

    text = SWEPT.replace("{float: [0.001, 0.01], log: true}", "{float: [1.0e-7, 2.0e-7]}").replace("epochs: 3", "epochs: 6")
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml")
    space = parse_space(to_plain(config.raw), ())
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1))
    distributions = {"compile.optimizer.learning_rate": optuna.distributions.FloatDistribution(1e-7, 2e-7),
                     "model.layers[0].Conv2D.filters": optuna.distributions.IntDistribution(2, 8, step=2)}
    study.add_trial(optuna.trial.create_trial(params={"compile.optimizer.learning_rate": 1.5e-7, "model.layers[0].Conv2D.filters": 4},
                                              distributions=distributions, value=0.1,
                                              intermediate_values={epoch: 0.1 for epoch in range(6)}))
    lines = []
    study.optimize(Objective(config, space, tmp_path / "trials", lines.append), n_trials=1)
    trial = study.trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["pruned_at_epoch"] == 2  # the first epoch after the warm-up
    history = run_files.read_history(Path(trial.user_attrs["run_dir"]) / "history.csv")
    assert history["epoch"] == [1, 2]  # training stopped there, and the run folder is whole
    assert run_files.read_status(trial.user_attrs["run_dir"]).reason == "pruned by the sweep after epoch 2"


def test_a_val_accuracy_sweep_gives_each_trials_value_with_n_and_its_interval(tmp_path):
    """The progress line and the top-trials table carry the trial run's metrics.json interval; a loss keeps 4 decimals."""
    import json

    from cnnlab.config.experiment import load_config
    from cnnlab.config.schema import to_plain
    from cnnlab.search.space import parse_space
    from cnnlab.search.sweep import Objective
    from cnnlab.search.sweep_report import top_trials

    text = SWEPT.replace("epochs: 3", "epochs: 1").replace("  trials: 3", "  trials: 1\n  metric: val_accuracy")
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml")
    space = parse_space(to_plain(config.raw), ())
    study = optuna.create_study(direction="maximize")
    lines = []
    study.optimize(Objective(config, space, tmp_path / "trials", lines.append), n_trials=1)
    (trial,) = study.trials
    metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
    val = metrics["intervals"]["best"]["val_accuracy"]
    assert trial.value == metrics["best"]["val_accuracy"] and trial.user_attrs["num_val"] == val["n"]
    low, high = f"{val['low']:.3f}", f"{val['high']:.3f}"
    assert f"trial 0: val_accuracy {trial.value:.3f} ({val['correct']}/{val['n']}, 95% CI {low}–{high}) in 1 epochs" in lines[-1]
    _, rows = top_trials(study.trials, space)
    assert rows[0][2] == f"{trial.value:.3f} ({low}–{high}, n={val['n']})"


@pytest.mark.parametrize("storage", ["postgresql://nobody:secret@127.0.0.1:9/none",  # nothing listens there
                                     "postgresql://nobody:secret@127.0.0.1:port/none",  # malformed: no port number
                                     "nosuchdb://x"])
def test_a_storage_that_cannot_be_opened_is_one_line_naming_it_without_its_password(tmp_path, storage):
    started = time.perf_counter()
    result = sweep(tmp_path, SWEPT, "--storage", storage)
    assert time.perf_counter() - started < 10  # within seconds, not a hang
    assert_one_line_error(result, f"--storage {storage.replace('secret', '***')}: cannot open the study database")
    assert not (tmp_path / "runs").exists()


def test_two_worker_processes_share_one_sqlite_study_each_started_once(tmp_path):
    result = sweep(tmp_path, SWEPT.replace("trials: 3", "trials: 4"), "--jobs", "2")
    assert result.exit_code == 0, result.output
    rows = trial_rows(only_sweep(tmp_path))
    finished = [row for row in rows if row["state"] == "complete"]
    # running trials count towards the 4, and a trial started when all 4 are taken gives way before training
    assert [row["state"] for row in rows] == ["complete"] * 4
    assert len({trial_pid(only_sweep(tmp_path), row) for row in rows}) == 2, "each of the two workers runs trials"
    sampled = {(row["compile.optimizer.learning_rate"], row["model.layers[0].Conv2D.filters"]) for row in finished}
    assert len(sampled) == len(finished), "the workers sampled the same values"


def trial_pid(sweep_dir, row):
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'study.db'}")
    return study.trials[int(row["number"])].user_attrs["pid"]


def test_a_sweep_killed_mid_trial_resumes_with_that_trial_failed_and_never_counted(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    slow = SWEPT.replace("epochs: 3", "epochs: 60\n  callbacks: {early_stopping: null}").replace("batch_size: 64", "batch_size: 16")
    (tmp_path / "config.yaml").write_text(slow)
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "sweep", str(tmp_path / "config.yaml"),
                                "--runs-dir", str(tmp_path / "runs"), "--trials", "2"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/sweep-*/trials/*/history.csv")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    sweep_dir = only_sweep(tmp_path)

    resumed = run_cli("sweep", "--resume", sweep_dir, "--trials", "1")
    assert resumed.exit_code == 0, resumed.output
    states = [row["state"] for row in trial_rows(sweep_dir)]
    assert states == ["fail", "complete"]


def test_a_study_name_taken_by_another_search_space_is_refused_and_leaves_no_sweep_folder(tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = sweep(tmp_path / "a", SWEPT, "--storage", storage, "--study", "digits", "--trials", "1")
    assert first.exit_code == 0, first.output
    other = SWEPT.replace("{int: [2, 8], step: 2}", "{int: [2, 4], step: 2}")
    result = sweep(tmp_path / "b", other, "--storage", storage, "--study", "digits", "--trials", "1")
    assert_one_line_error(result, f"{tmp_path / 'b' / 'config.yaml'}: sweep: the study 'digits' in {storage} was made with another search space "
                                  "(sweep.params.model.layers[0].Conv2D.filters differs)")
    assert not list((tmp_path / "b" / "runs").glob("sweep-*"))


def test_resume_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    (tmp_path / "compare-x").mkdir()
    (tmp_path / "compare-x" / "compare.json").write_text("{}")
    result = run_cli("sweep", "--resume", tmp_path / "compare-x")
    assert_one_line_error(result, f"--resume {tmp_path / 'compare-x'}: not a sweep folder (no sweep.json); "
                                  "leave out --resume to start a new sweep", exact=True)
