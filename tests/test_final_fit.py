"""train.final_fit: after validation has chosen the epoch count, a second model learns from training + validation."""

import json

import keras
import numpy as np
import pytest

from cnnlab.rundir import files as run_files
from conftest import TINY_DIGITS, assert_one_line_error, run_cli, train_run

FINAL_FIT = TINY_DIGITS.replace("  epochs: 2\n", "  epochs: 3\n  final_fit: all\n")


@pytest.fixture(scope="module")
def final_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("final"), FINAL_FIT)


def test_the_final_model_retrains_best_epoch_epochs_on_training_and_validation(final_run):
    metrics = json.loads((final_run / run_files.METRICS).read_text())
    record = metrics["final_fit"]
    assert record["epochs"] == metrics["best_epoch"] > 0
    assert record["images"] == metrics["num_train"] + metrics["num_val"]
    assert set(record["test"]) == set(metrics["test"])  # both models scored on the same held-out test split
    best = keras.models.load_model(final_run / run_files.MODEL).get_weights()
    final = keras.models.load_model(final_run / run_files.FINAL_MODEL).get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(best, final))
    assert run_files.read_status(final_run).state == run_files.COMPLETED


def test_evaluate_uses_the_final_model_and_says_so(final_run):
    record = json.loads((final_run / run_files.METRICS).read_text())["final_fit"]
    result = run_cli("evaluate", final_run)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == f"Model: final.keras (retrained on training + validation for {record['epochs']} epochs)"
    report = json.loads((final_run / run_files.EVAL_DIR / "test.json").read_text())
    assert report["accuracy"] == pytest.approx(record["test"]["accuracy"])  # final.keras's test score, not best.keras's


def test_evaluate_refuses_the_validation_split_the_final_model_trained_on(final_run):
    result = run_cli("evaluate", final_run, "--split", "val")
    assert_one_line_error(result, f"{final_run}: its model is final.keras (retrained on training + validation for ")


@pytest.mark.parametrize("setting, expected", [
    ("train.final_fit=some", "train.final_fit: expected all (retrain on training + validation images for the best "
                             "epoch's count) or null, received 'some'"),
    ("train.callbacks.reduce_lr={patience: 1}", "train.final_fit: cannot replay train.callbacks.reduce_lr"),
])
def test_a_final_fit_it_cannot_do_is_one_line(write_config, setting, expected):
    config = write_config(FINAL_FIT)
    result = run_cli("check", config, "--set", setting)
    assert_one_line_error(result, f"{config}: {expected}")


def test_a_run_stopped_by_ctrl_c_during_its_final_fit_resumes_into_the_same_final_model(tmp_path, monkeypatch):
    """A real SIGINT after the final fit's first batch: the run is interrupted with best.keras whole and no final.keras;
    --resume skips the first fit's epochs and trains the final model again, ending as the uninterrupted run."""
    import os
    import signal

    from cnnlab.data.array_batches import EpochOrder
    from cnnlab.training import final_fit

    whole = train_run(tmp_path / "whole", FINAL_FIT)

    class CtrlCAfterTheFirstBatch(EpochOrder):
        sent = False

        def on_train_batch_end(self, batch, logs=None):  # with steps_per_execution, `batch` counts steps, not calls
            if not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(final_fit, "EpochOrder", CtrlCAfterTheFirstBatch)
        config = tmp_path / "stopped.yaml"
        config.write_text(FINAL_FIT)
        stopped = run_cli("train", config, "--runs-dir", tmp_path / "stopped", "-q")
    assert stopped.exit_code == 130, stopped.output
    (run_dir,) = (tmp_path / "stopped").iterdir()
    assert run_files.read_status(run_dir).state == "interrupted"
    assert (run_dir / run_files.MODEL).is_file() and not (run_dir / run_files.FINAL_MODEL).exists()
    first_fit = run_files.read_history(run_dir / run_files.HISTORY)

    resumed = run_cli("train", "--resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert run_files.read_history(run_dir / run_files.HISTORY) == first_fit  # no first-fit epoch trained again
    assert "Final fit:" in resumed.output
    metrics, expected = (json.loads((path / run_files.METRICS).read_text())["final_fit"] for path in (run_dir, whole))
    assert metrics["epochs"] == expected["epochs"]
    for mine, theirs in zip(keras.models.load_model(run_dir / run_files.FINAL_MODEL).get_weights(),
                            keras.models.load_model(whole / run_files.FINAL_MODEL).get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
