"""Sweeps and comparisons that can only fail end, in one line; a failed trial's traceback goes to its folder, or under --debug to stderr.

The sweeps run as a user's shell runs them, in a fresh process whose stdout and stderr are
read whole (worker processes' included), with the default TPE sampler, and with a hang
guard: before these fixes a sweep whose every trial failed never ended.
"""

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from cnnlab.rundir import files as run_files
from cnnlab.cli import main
from cnnlab.search.study import SURPLUS, claim_slot, failure_streak
from conftest import REPO, TINY_DIGITS

HANG_GUARD_S = 300  # generous: only a sweep that never ends reaches it (2 shared cores, TensorFlow started per process)
NAN = "loss became NaN at epoch 1; try a smaller learning rate"  # what a run's status says of a diverged first epoch

DIVERGING = TINY_DIGITS.replace("  epochs: 2", "  epochs: 1").replace(
    "model:", "compile:\n  optimizer: {name: sgd, learning_rate: 1.0e+30}\nmodel:") + """\
sweep:
  trials: 5
  max_failures: 2
  params:
    compile.optimizer.learning_rate: {float: [1.0e+29, 1.0e+30], log: true}
"""


def cnnlab(*args, timeout=HANG_GUARD_S):
    """(exit code, stdout, stderr) of `python -m cnnlab.cli ARGS` in its own process group, killed whole at `timeout` s."""
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    process = subprocess.Popen([sys.executable, "-m", "cnnlab.cli", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout} s; stdout ends: {out[-2000:]}")
    return process.returncode, out, err


def assert_ends_in_one_line(code, out, err, expected):
    """Exit code 2, stderr exactly `Error: expected`, and no traceback or Optuna log line anywhere."""
    assert code == 2, out + err
    assert err.splitlines() == [f"Error: {expected}"], err
    assert_nothing_but_cnnlab_lines(out + err)


def assert_nothing_but_cnnlab_lines(text):
    assert "Traceback" not in text, text
    assert not re.search(r"^\[[WI] \d{4}-", text, re.MULTILINE), text  # Optuna's `[W 2026-01-01 ...] Trial 3 failed`


def only_sweep(runs_dir):
    (sweep_dir,) = Path(runs_dir).glob("sweep-*")
    return sweep_dir


def trial_rows(sweep_dir):
    with open(sweep_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- refused before any trial


def test_a_sweep_of_a_missing_data_folder_is_refused_in_one_line_before_any_folder_exists(tmp_path):
    missing = tmp_path / "photoz"
    config = write(tmp_path / "photos.yaml", f"""\
data:
  source: image_folder
  path: {missing}
  image_size: [8, 8]
model:
  input_shape: [8, 8, 3]
  layers:
    - Conv2D: {{filters: 4, kernel_size: 3}}
    - Flatten: {{}}
    - Dense: {{units: 2, activation: softmax}}
sweep:
  params:
    model.layers[0].Conv2D.filters: {{int: [2, 8]}}
""")
    code, out, err = cnnlab("sweep", config, "--runs-dir", tmp_path / "runs", timeout=60)  # TensorFlow's start included
    assert_ends_in_one_line(code, out, err, f"data.path {missing}: not found; expected a folder of class sub-folders "
                                            "holding images, e.g. cats/1.png, dogs/2.jpg")
    assert out == ""
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- stopped by its failures


def test_a_sweep_whose_every_trial_diverges_stops_after_max_failures_in_one_line_and_its_resume_counts_afresh(tmp_path):
    config = write(tmp_path / "config.yaml", DIVERGING)
    code, out, err = cnnlab("sweep", config, "--runs-dir", tmp_path / "runs")
    sweep_dir = only_sweep(tmp_path / "runs")
    assert_ends_in_one_line(code, out, err, f"the sweep in {sweep_dir} stopped after 2 failed trials in a row "
                                            f"(sweep.max_failures: 2; report in {sweep_dir / 'summary.md'}); "
                                            f"2 of 2 failed trials with: {NAN}")
    rows = trial_rows(sweep_dir)
    assert [(row["state"], row["reason"]) for row in rows] == [("fail", NAN)] * 2
    for row in rows:  # the traceback is in the trial's own run folder, and it is train's, not Optuna's
        assert Path(row["failure_log"]) == Path(row["run_dir"]) / run_files.FAILURE_LOG
        log = Path(row["failure_log"]).read_text()
        assert "Traceback (most recent call last)" in log and "in finish_run" in log
    summary = (sweep_dir / "summary.md").read_text()
    assert f"Most common reason (2 of 2): {NAN}." in summary

    # resumed, it tries max_failures more trials, not none: the two failures of the first session do not count
    code, out, err = cnnlab("sweep", "--resume", sweep_dir)
    assert_ends_in_one_line(code, out, err, f"the sweep in {sweep_dir} stopped after 2 failed trials in a row "
                                            f"(sweep.max_failures: 2; report in {sweep_dir / 'summary.md'}); "
                                            f"4 of 4 failed trials with: {NAN}")
    assert [row["number"] for row in trial_rows(sweep_dir)] == ["0", "1", "2", "3"]


def test_trials_that_fail_among_two_workers_are_recorded_and_the_others_finish_the_sweep(tmp_path):
    """Pools of 16 on 8x8 images cannot build. TPE's first ten trials draw from a seed per trial number, whichever
    worker runs them: with seed 7, trial 1 draws 16 and trials 0, 2 and 3 draw 2."""
    config = write(tmp_path / "config.yaml", TINY_DIGITS + """\
sweep:
  trials: 3
  params:
    model.layers[1].MaxPooling2D.pool_size: {choice: [2, 16]}
""")
    code, out, err = cnnlab("sweep", config, "--runs-dir", tmp_path / "runs", "--jobs", "2")
    assert code == 0, out + err
    assert err == ""
    assert_nothing_but_cnnlab_lines(out)
    sweep_dir = only_sweep(tmp_path / "runs")
    rows = trial_rows(sweep_dir)
    assert [(row["state"], row["model.layers[1].MaxPooling2D.pool_size"]) for row in rows] == [
        ("complete", "2"), ("fail", "16"), ("complete", "2"), ("complete", "2")]
    failed = rows[1]
    assert failed["reason"].startswith("model.layers[1].MaxPooling2D")
    assert failed["run_dir"] == ""  # the model never built, so train made no run folder; the log is where it would be
    assert Path(failed["failure_log"]) == sweep_dir / "trials" / f"tiny-trial001-{run_files.FAILURE_LOG}"
    assert "ConfigError" in Path(failed["failure_log"]).read_text()
    assert f"3 trials finished, 1 failed. Sweep: {sweep_dir}" in out


def test_a_first_trial_that_cannot_build_keeps_its_log_though_no_trial_has_made_the_trials_folder(tmp_path):
    """Among --jobs 2, the trial that failed to build once ran before the other had made `trials/`, and its log was
    lost; here the only trial fails that way, so no other can make the folder first."""
    config = write(tmp_path / "config.yaml", TINY_DIGITS + """\
sweep:
  trials: 2
  max_failures: 1
  params:
    model.layers[1].MaxPooling2D.pool_size: {choice: [16]}
""")
    result = CliRunner().invoke(main, ["sweep", str(config), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    sweep_dir = only_sweep(tmp_path / "runs")
    (row,) = trial_rows(sweep_dir)
    assert (row["state"], row["run_dir"]) == ("fail", "")
    assert Path(row["failure_log"]) == sweep_dir / "trials" / f"tiny-trial000-{run_files.FAILURE_LOG}"
    assert "ConfigError" in Path(row["failure_log"]).read_text()


# ---------------------------------------------------------------- the study's rules, on a real Optuna study


def test_of_two_trials_started_at_once_for_the_last_slot_the_later_gives_way():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=1.0))
    mine, theirs = study.ask(), study.ask()  # two workers ask in the same instant: both trials are running
    assert claim_slot(study, mine.number, trials=2)
    assert not claim_slot(study, theirs.number, trials=2)
    give_way(study, theirs)
    later = study.ask()
    assert not claim_slot(study, later.number, trials=2)  # mine still holds the slot while it runs
    give_way(study, later)
    study.tell(mine, state=optuna.trial.TrialState.FAIL)  # then fails: the slot is free again
    assert claim_slot(study, study.ask().number, trials=2)


def give_way(study, trial):
    """What the objective of a trial that claimed no slot does."""
    trial.set_user_attr(SURPLUS, True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_a_failure_streak_is_broken_by_a_success_or_a_running_trial_and_not_by_a_surplus_one():
    def trial(number, state, **attrs):
        made = optuna.trial.create_trial(state=state, value=1.0 if state == optuna.trial.TrialState.COMPLETE else None,
                                         user_attrs=attrs)
        made.number = number
        return made

    fail, done, running = (optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    trials = [trial(0, fail, failed=True), trial(1, fail, failed=True), trial(2, done), trial(3, fail, failed=True),
              trial(4, fail, **{SURPLUS: True}), trial(5, fail), trial(6, fail, failed=True), trial(7, running),
              trial(8, fail, failed=True)]
    assert failure_streak(trials) == 2  # 0-1, and 3 and 6 (4 was surplus, 5 killed), not 8 after the running 7
    assert failure_streak(trials, first=2) == 2
    assert failure_streak(trials, first=7) == 1


# ---------------------------------------------------------------- compare-optimizers


def compare(tiny, runs_dir, *args):
    return CliRunner().invoke(main, ["compare-optimizers", str(tiny), "--runs-dir", str(runs_dir), "--epochs", "1",
                                     *map(str, args)])


def test_a_comparison_whose_every_candidate_fails_ends_in_one_line_naming_the_common_reason(tmp_path):
    tiny = write(tmp_path / "tiny.yaml", TINY_DIGITS)
    result = compare(tiny, tmp_path / "runs", "-o", "sgd:learning_rate=1e30", "-o", "sgd:learning_rate=1e29")
    (compare_dir,) = (tmp_path / "runs").iterdir()
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: every run of the comparison failed; see {compare_dir / 'summary.md'}; 2 of 2 with: {NAN}"]
    assert_nothing_but_cnnlab_lines(result.output)
    for run_dir in (path for path in compare_dir.iterdir() if path.is_dir()):
        assert "in finish_run" in (run_dir / run_files.FAILURE_LOG).read_text()


def test_debug_prints_the_tracebacks_of_failed_runs_sent_back_by_their_workers(tmp_path):
    tiny = write(tmp_path / "tiny.yaml", TINY_DIGITS)
    code, out, err = cnnlab("--debug", "compare-optimizers", tiny, "--runs-dir", tmp_path / "runs", "--epochs", "1",
                            "-o", "sgd:learning_rate=1e30", "-o", "sgd:learning_rate=1e29", "--jobs", "2")
    assert code == 2, out + err
    tracebacks = err.split("Traceback (most recent call last):")[1:]
    assert len(tracebacks) == 3  # one per worker's run, then the comparison's own error
    for trace in tracebacks[:2]:
        assert "in train_in_group" in trace and "in finish_run" in trace and "RunError: training failed in" in trace
    assert err.splitlines()[-1].startswith("Error: every run of the comparison failed")
