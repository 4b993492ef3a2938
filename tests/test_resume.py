"""Interrupted training resumes: real SIGINT and SIGKILL sent to a real `cnnlab train` process."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from cnnlab.rundir import files as run_files, resume_state
from cnnlab.cli import main
from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import preprocessing_for

from conftest import TINY_DIGITS

EPOCHS = 80  # about 0.05 s an epoch after the first: the signal, sent within 0.5 s of epoch 1, must find training running
LONG_TINY = (TINY_DIGITS.replace("  epochs: 2", f"  epochs: {EPOCHS}").replace("  batch_size: 64", "  batch_size: 16")
             + "  callbacks: {early_stopping: null}\n")


def start_training(config_path, runs_dir):
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "cnnlab.cli", "train", str(config_path), "--runs-dir", str(runs_dir), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_epochs(runs_dir, count, process, timeout=120):
    """Returns the run folder once its history.csv holds `count` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for history in runs_dir.glob("*/history.csv"):
            if len(run_files.read_history_rows(history)) >= count:
                return history.parent
        time.sleep(0.05)
    process.kill()
    pytest.fail("training did not reach the expected epoch in time")


def interrupt(tmp_path, write_config, sig):
    """Trains in a subprocess, sends `sig` at a random point after the first epoch, returns the run folder."""
    runs_dir = tmp_path / "runs"
    process = start_training(write_config(LONG_TINY), runs_dir)
    run_dir = wait_for_epochs(runs_dir, 1, process)
    time.sleep(random.uniform(0, 0.5))
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return run_dir, process.returncode, stderr


def resume(run_dir):
    return CliRunner().invoke(main, ["train", "--resume", str(run_dir), "-q"])


def assert_complete_and_consistent(run_dir):
    history = run_files.read_history(run_dir / "history.csv")
    assert history["epoch"] == list(range(1, EPOCHS + 1))  # every epoch exactly once, in order
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == EPOCHS
    assert metrics["best"]["val_loss"] == pytest.approx(min(history["val_loss"]))
    assert run_files.read_status(run_dir).state == "completed"
    assert not (run_dir / run_files.BACKUP_DIR).exists()

    import keras

    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    model = keras.models.load_model(run_dir / "best.keras")
    ds = make_dataset(splits.x_test, splits.y_test, preprocessing_for(config.data), 64)
    assert model.evaluate(ds, verbose=0, return_dict=True)["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)


def test_ctrl_c_leaves_an_interrupted_consistent_run_that_resumes(tmp_path, write_config):
    run_dir, code, stderr = interrupt(tmp_path, write_config, signal.SIGINT)
    assert code == 130
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: training interrupted after epoch ")
    assert last_line.endswith(f"resume with: cnnlab train --resume {run_dir}")
    status = run_files.read_status(run_dir)
    done = len(run_files.read_history_rows(run_dir / "history.csv"))
    assert status.state == "interrupted" and status.reason == f"after epoch {done} of {EPOCHS}"
    assert (run_dir / "loss.png").exists() and (run_dir / "best.keras").exists()

    result = resume(run_dir)
    assert result.exit_code == 0, result.output
    assert_complete_and_consistent(run_dir)


def test_sigterm_stops_like_ctrl_c(tmp_path, write_config):
    run_dir, code, stderr = interrupt(tmp_path, write_config, signal.SIGTERM)
    assert code == 130 and "Traceback" not in stderr
    assert run_files.read_status(run_dir).state == "interrupted"


def test_a_run_killed_mid_epoch_resumes_the_same_way(tmp_path, write_config):
    run_dir, code, _ = interrupt(tmp_path, write_config, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert run_files.read_status(run_dir).state == "running"  # nobody could say otherwise
    result = resume(run_dir)
    assert result.exit_code == 0, result.output
    assert_complete_and_consistent(run_dir)


def test_a_completed_run_cannot_be_resumed(tmp_path, tiny_config):
    assert CliRunner().invoke(main, ["train", str(tiny_config), "--runs-dir", str(tmp_path), "-q", "--epochs", "1"]).exit_code == 0
    (run_dir,) = tmp_path.glob("tiny-*")
    result = resume(run_dir)
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {run_dir} has already completed; nothing to resume"


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = resume(tmp_path)
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {tmp_path} is not a run folder: config.yaml is missing"


def test_resume_takes_no_other_config(tmp_path, tiny_config):
    result = CliRunner().invoke(main, ["train", str(tiny_config), "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "--resume continues with the run's own config.yaml" in result.output


def test_early_stopping_counter_and_best_carry_over_a_resume(tmp_path):
    import keras

    from cnnlab.training.callbacks import ResumedEarlyStopping

    past = [{"epoch": 1, "val_loss": 0.9}, {"epoch": 2, "val_loss": 0.5}, {"epoch": 3, "val_loss": 0.6}, {"epoch": 4, "val_loss": 0.7}]
    callback = ResumedEarlyStopping(past, tmp_path, monitor="val_loss", patience=3)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.best == 0.5 and callback.wait == 2 and callback.best_epoch == 1
    callback.on_epoch_end(4, {"val_loss": 0.8})
    assert model.stop_training  # the third epoch without improvement, counted across the resume


def write_backup(run_dir, metadata, weights):
    """Keras' backup folder as a kill may leave it: `metadata` and `weights` are each (latest, .bkp) file contents."""
    backup = run_dir / run_files.BACKUP_DIR
    backup.mkdir()
    for name, (latest, previous) in (("training_metadata.json", metadata), ("latest.weights.h5", weights)):
        (backup / name).write_bytes(latest)
        (backup / f"{name}.bkp").write_bytes(previous)
    return backup


def test_a_backup_cut_off_by_a_kill_falls_back_to_the_previous_pair(tmp_path):
    backup = write_backup(tmp_path, (b'{"epo', b'{"epoch": 4, "batch": 0}'),  # killed while Keras wrote the metadata
                          (b"epoch 5 weights", b"epoch 4 weights"))
    assert resume_state.backup_epoch(tmp_path) == 4
    assert (backup / "latest.weights.h5").read_bytes() == b"epoch 4 weights"  # the pair Keras will load matches
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 4


def test_weights_cut_off_by_a_kill_fall_back_to_the_previous_pair(tmp_path):
    # epoch 5's metadata not yet written; killed while Keras wrote its weights
    backup = write_backup(tmp_path, (b'{"epoch": 4, "batch": 0}', b'{"epoch": 4, "batch": 0}'), (b"epoch 5 wei", b"epoch 4 weights"))
    assert resume_state.backup_epoch(tmp_path) == 4
    assert (backup / "latest.weights.h5").read_bytes() == b"epoch 4 weights"


def test_a_whole_backup_is_left_as_it_is(tmp_path):
    backup = write_backup(tmp_path, (b'{"epoch": 5, "batch": 0}', b'{"epoch": 4, "batch": 0}'),
                          (b"epoch 5 weights", b"epoch 4 weights"))
    assert resume_state.backup_epoch(tmp_path) == 5
    assert (backup / "latest.weights.h5").read_bytes() == b"epoch 5 weights"


def test_an_unusable_backup_restarts_the_epochs(tmp_path):
    backup = tmp_path / run_files.BACKUP_DIR
    backup.mkdir()
    (backup / "training_metadata.json").write_text("")
    assert resume_state.backup_epoch(tmp_path) == 0
    assert not backup.exists()


def test_a_run_still_training_cannot_be_resumed_by_a_second_process(tmp_path, write_config):
    runs_dir = tmp_path / "runs"
    process = start_training(write_config(LONG_TINY), runs_dir)
    run_dir = wait_for_epochs(runs_dir, 1, process)
    try:
        result = resume(run_dir)
    finally:
        process.kill()
        process.communicate()
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: {run_dir} is being trained by process {process.pid} (it holds {run_dir / run_files.LOCK}); "
                                     "wait for it to end or stop it, then resume")
    assert len(run_files.read_history_rows(run_dir / "history.csv")) >= 1  # the refused resume cut nothing back

    result = resume(run_dir)  # the kernel let go of the killed process's lock
    assert result.exit_code == 0, result.output
    assert_complete_and_consistent(run_dir)
    assert not (run_dir / run_files.LOCK).exists()
