"""compile.loss with arguments: label smoothing reaches Keras' cross-entropy on cnnlab's class-index labels."""

import json

import keras
import numpy as np
import pytest

from cnnlab.rundir import files as run_files
from conftest import TINY_DIGITS, assert_one_line_error, run_cli, write_and_train


def with_loss(loss):
    return TINY_DIGITS.replace("model:", f"compile:\n  loss: {loss}\nmodel:")


@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_label_smoothing_trains_on_class_indices_and_best_keras_keeps_it(tmp_path, name):
    """The data stay class indices: the loss makes them one-hot, so the smoothed loss is Keras' own on one-hot labels."""
    run_dir = write_and_train(tmp_path, with_loss(f"{{name: {name}, label_smoothing: 0.2}}")).run_dir
    model = keras.models.load_model(run_dir / run_files.MODEL)
    assert model.loss.label_smoothing == 0.2
    rng = np.random.default_rng(0)
    images, labels = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 16)
    predicted = model.predict(images, verbose=0)
    one_hot = np.eye(10, dtype=np.float32)[labels]
    expected = np.mean(keras.losses.categorical_crossentropy(one_hot, predicted, label_smoothing=0.2))
    unsmoothed = np.mean(keras.losses.categorical_crossentropy(one_hot, predicted))
    assert float(model.loss(labels, predicted)) == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(unsmoothed)) > 1e-3
    evaluated = run_cli("evaluate", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((run_dir / run_files.METRICS).read_text())["test"]["accuracy"] > 0


def test_an_unknown_loss_argument_is_one_line_listing_the_valid_ones(write_config):
    path = write_config(with_loss("{name: categorical_crossentropy, label_smoth: 0.1}"))
    assert_one_line_error(run_cli("check", path), f"{path}: compile.loss.label_smoth: unknown argument of CategoricalCrossentropy "
                          "(did you mean label_smoothing?); valid arguments: axis, dtype, from_logits, label_smoothing, name, reduction",
                          exact=True)
