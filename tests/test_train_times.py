"""The times a run reports: `fit` with every callback in metrics.json, and the command's own from process start.

Only orderings are asserted, never how long anything takes: the fit holds the epochs and
what the callbacks do between them; the command holds the fit and everything before it.
"""

import json
import re
import subprocess
import sys
import time

import keras
import pytest

from cnnlab.rundir import files as run_files
from cnnlab.config.experiment import load_config
from cnnlab.training.train import train

from conftest import TINY_DIGITS, run_cli
from test_resume_state import CtrlCAfter, with_extra_callbacks

ROUNDING = 0.001  # metrics.json rounds each time to 3 decimals


class SlowAfterEachEpoch(keras.callbacks.Callback):
    """Work after each epoch's end, as a checkpoint write or a tracker's upload is: outside the epoch, inside `fit`."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds
        self.spent = 0.0

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        time.sleep(self.seconds)
        self.spent += time.perf_counter() - started


def test_fit_time_holds_the_epochs_and_every_callbacks_work(tiny_config, tmp_path):
    slow = SlowAfterEachEpoch(0.3)
    started = time.perf_counter()
    result = train(load_config(tiny_config), tmp_path / "runs", verbose=0, extra_callbacks=[slow])
    outside = time.perf_counter() - started
    m = result.metrics
    history = run_files.read_history(result.run_dir / run_files.HISTORY)
    assert m["fit_epochs"] == m["epochs_run"] == 2
    assert m["epoch_time_s"] == pytest.approx(sum(history["time_s"]), abs=ROUNDING)
    assert m["epoch_time_s"] + slow.spent - 2 * ROUNDING <= m["fit_time_s"] <= outside
    assert m["images_per_s"] == pytest.approx(m["num_train"] * 2 / m["fit_time_s"], rel=1e-3)
    assert json.loads((result.run_dir / run_files.METRICS).read_text()) == m
    assert "wall_time_s" not in m


def test_train_prints_the_fit_time_and_the_commands_wall_time(tiny_config, tmp_path):
    result = run_cli("train", tiny_config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = json.loads((run_dir / run_files.METRICS).read_text())
    *_, training, command = result.output.splitlines()
    assert training == f"Training time (fit, all callbacks): {m['fit_time_s']:.1f} s ({m['images_per_s']:.0f} images/s)"
    assert re.fullmatch(r"Command wall time: \d+\.\d s", command), command
    assert float(command.split()[-2]) >= float(training.split()[-4])
    assert "Wall time" not in result.output


def test_a_resumed_run_reports_the_fit_of_its_last_session(tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(TINY_DIGITS.replace("  epochs: 2", "  epochs: 3"))
    with monkeypatch.context() as patch:
        with_extra_callbacks(patch, CtrlCAfter(1))
        assert run_cli("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    result = run_cli("train", "--resume", run_dir, "-q")
    assert result.exit_code == 0, result.output
    m = json.loads((run_dir / run_files.METRICS).read_text())
    assert (m["epochs_run"], m["fit_epochs"]) == (3, 2)
    assert m["images_per_s"] == pytest.approx(m["num_train"] * 2 / m["fit_time_s"], rel=1e-3)
    assert m["epoch_time_s"] == pytest.approx(sum(run_files.read_history(run_dir / run_files.HISTORY)["time_s"]), abs=ROUNDING)
    assert (f"Training time (this session's fit, all callbacks): {m['fit_time_s']:.1f} s ({m['images_per_s']:.0f} images/s)"
            in result.output.splitlines())


def test_the_commands_wall_time_counts_from_process_start(tiny_config, tmp_path):
    """The child sleeps before it imports cnnlab: only a clock that starts with the process counts that second."""
    child = ("import sys, time; time.sleep(1); from cnnlab.cli import main; "
             f"main(['train', {str(tiny_config)!r}, '--runs-dir', {str(tmp_path / 'runs')!r}, '-q'])")
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600)
    outside = time.perf_counter() - started
    assert process.returncode == 0, process.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    m = json.loads((run_dir / run_files.METRICS).read_text())
    command = float(re.search(r"^Command wall time: (\S+) s$", process.stdout, re.MULTILINE)[1])
    assert 1 + m["fit_time_s"] - 0.05 <= command <= outside + 0.05  # printed to 0.1 s
    assert m["epoch_time_s"] <= m["fit_time_s"] + 2 * ROUNDING


def test_a_process_that_started_a_backend_exits_without_walking_its_objects():
    """By the time exit gets past cnnlab's handler, every object is frozen: the final collections skip them
    (seconds after TensorFlow, bench/startup.py). An atexit handler registered before runs after."""
    child = ("import atexit, gc; atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0)); "
             "from cnnlab.runtime import backend; backend.select(None); backend.start()")
    process = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == ["frozen at exit: True"]
