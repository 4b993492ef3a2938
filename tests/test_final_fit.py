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
