"""A resumed run ends as the uninterrupted run would: callbacks keep their state over the interruption.

The interruption is a real Ctrl-C (KeyboardInterrupt) raised at the end of a chosen epoch,
after every callback of the run has saved its state, so the two runs can be compared exactly.
"""

import json

import keras
import numpy as np
import pytest

from cnnlab.training import callbacks
from cnnlab.rundir import files as run_files
from conftest import BACKEND, TINY_DIGITS, run_cli, write_and_train

WATCHED = TINY_DIGITS.replace("  epochs: 2", "  epochs: 14").replace("  batch_size: 64", "  batch_size: 32").replace(
    "model:", "compile:\n  optimizer: {name: adam, learning_rate: 0.01}\nmodel:") + """\
  callbacks:
    checkpoint: {monitor: MONITOR, mode: MODE}
    early_stopping: {monitor: MONITOR, mode: MODE, patience: 3, restore_best_weights: true}
    reduce_lr: {monitor: MONITOR, mode: MODE, patience: 1, factor: 0.5, cooldown: 1, min_lr: 0.0001}
"""


class CtrlCAfter(keras.callbacks.Callback):
    """Ctrl-C at the end of epoch `epoch` (1-based), after the run's own callbacks wrote that epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise KeyboardInterrupt


class WeightsAtEnd(keras.callbacks.Callback):
    """Keeps the model's weights as training leaves them, after early stopping restored the best ones."""

    weights = None

    def on_train_end(self, logs=None):
        WeightsAtEnd.weights = self.model.get_weights()


def with_extra_callbacks(monkeypatch, *extra):
    make = callbacks.make_callbacks
    monkeypatch.setattr(callbacks, "make_callbacks", lambda *args: make(*args) + list(extra))


def only_run(root):
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def comparable(run_dir):
    history = run_files.read_history(run_dir / run_files.HISTORY)
    history.pop("time_s")
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    return history, {key: metrics[key] for key in ("epochs_run", "best_epoch", "best", "test")}


def train_interrupted_and_resumed(root, text, monkeypatch, epoch):
    with monkeypatch.context() as patch:
        with_extra_callbacks(patch, CtrlCAfter(epoch))
        result = write_and_train(root, text, check=False)
    assert result.exit_code == 130, result.output
    run_dir = only_run(root)
    assert run_files.read_status(run_dir).state == "interrupted"
    resumed = run_cli("train", "--resume", run_dir, "-q")
    assert resumed.exit_code == 0, resumed.output
    return run_dir


DROPOUT = "    - Flatten: {}\n    - Dropout: {rate: 0.3}\n"


@pytest.mark.parametrize("monitor, mode, layers", [
    ("val_accuracy", "auto", ""),
    ("accuracy", "auto", ""),
    ("val_loss", "min", DROPOUT),  # the masks after the resume are those the uninterrupted run drew
])
def test_a_run_resumed_after_ctrl_c_ends_exactly_as_the_uninterrupted_run(tmp_path, monkeypatch, monitor, mode, layers):
    text = WATCHED.replace("MONITOR", monitor).replace("MODE", mode)
    if layers:
        text = text.replace("    - Flatten: {}\n", layers)
    whole = tmp_path / "whole"
    assert write_and_train(whole, text, check=False).exit_code == 0
    expected_history, expected_metrics = comparable(only_run(whole))

    stopped_at = 6  # with val_accuracy: early stopping's wait is 1 and ReduceLROnPlateau is in its cooldown
    run_dir = train_interrupted_and_resumed(tmp_path / "resumed", text, monkeypatch, stopped_at)
    history, metrics = comparable(run_dir)
    assert history.keys() == expected_history.keys()
    for key in expected_history:
        np.testing.assert_allclose(history[key], expected_history[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert json.dumps(metrics) == json.dumps(expected_metrics)
    # the test shows little unless the interruption falls amid the callbacks' counting, as it does on TensorFlow's
    # numbers (other backends' trajectories differ in rounding, and stopped_at was chosen on TensorFlow's)
    if monitor == "val_accuracy" and BACKEND == "tensorflow":
        rates = expected_history["learning_rate"]
        assert rates[stopped_at] < rates[stopped_at - 1] and rates[stopped_at + 1] < rates[stopped_at], rates
        assert stopped_at < metrics["epochs_run"] < 14, "early stopping should end the run after the resume"


def test_restore_best_weights_after_a_resume_restores_the_best_epoch_of_the_whole_run(tmp_path, monkeypatch):
    # val_loss falls on this data, so with mode max the best epoch is the first, before the interruption
    text = WATCHED.replace("MONITOR", "val_loss").replace("MODE", "max").replace("epochs: 14", "epochs: 4")
    with monkeypatch.context() as patch:
        with_extra_callbacks(patch, CtrlCAfter(2))
        assert write_and_train(tmp_path, text, check=False).exit_code == 130
    run_dir = only_run(tmp_path)
    with_extra_callbacks(monkeypatch, WeightsAtEnd())
    assert run_cli("train", "--resume", run_dir, "-q").exit_code == 0

    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    assert metrics["best_epoch"] == 1 and metrics["epochs_run"] == 4
    best = keras.models.load_model(run_dir / run_files.MODEL).get_weights()  # the checkpoint watches the same value
    for restored, saved in zip(WeightsAtEnd.weights, best):
        np.testing.assert_array_equal(restored, saved)
    assert not (run_dir / run_files.RESUME_DIR).exists()


AUGMENTATION = "  augmentation:\n    - RandomFlip: {mode: horizontal}\n    - RandomTranslation: {height_factor: 0.2, width_factor: 0.2}\n  layers:\n"


def test_a_run_with_augmentation_resumed_after_ctrl_c_draws_the_augmentation_of_the_uninterrupted_run(tmp_path, monkeypatch):
    text = WATCHED.replace("MONITOR", "val_loss").replace("MODE", "min").replace("epochs: 14", "epochs: 6").replace("  layers:\n", AUGMENTATION)
    whole = tmp_path / "whole"
    assert write_and_train(whole, text, check=False).exit_code == 0
    expected_history, expected_metrics = comparable(only_run(whole))

    run_dir = train_interrupted_and_resumed(tmp_path / "resumed", text, monkeypatch, 3)
    history, metrics = comparable(run_dir)
    for key in expected_history:
        np.testing.assert_allclose(history[key], expected_history[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert json.dumps(metrics) == json.dumps(expected_metrics)
