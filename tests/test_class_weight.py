"""train.class_weight: balanced or per-class weights reach the training loss, whichever loop the backend runs."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from cnnlab.rundir import files as run_files
from conftest import assert_one_line_error, run_cli, write_and_train

CONFIG = """\
seed: 3
data: {{source: npz, path: {path}}}
model:
  input_shape: [8, 8, 1]
  layers:
    - Flatten: {{}}
    - Dense: {{units: 2, activation: softmax}}
compile:
  optimizer: {{name: sgd, learning_rate: 0.05}}
train:
  epochs: 2
  batch_size: 16
  callbacks: {{early_stopping: null}}
"""


def biased_digits(path, majority=140, minority=8):
    """Digits 3 (class "three", many) against 8 (class "eight", few) for training; a balanced validation split."""
    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)[..., None]
    three, eight = images[digits.target == 3], images[digits.target == 8]
    x_train = np.concatenate([three[:majority], eight[:minority]])
    y_train = np.array([0] * majority + [1] * minority)
    x_val = np.concatenate([three[-40:], eight[-40:]])
    y_val = np.array([0] * 40 + [1] * 40)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, class_names=np.array(["three", "eight"]))
    return x_val


def minority_predictions(run_dir, x_val):
    model = keras.models.load_model(run_dir / run_files.MODEL)
    return int((model.predict(x_val / 255, verbose=0).argmax(axis=1) == 1).sum())


@pytest.mark.parametrize("class_weight", ["balanced", "{eight: 20}", "{1: 20}"])
def test_class_weights_shift_predictions_of_a_biased_split_toward_its_minority(tmp_path, class_weight):
    x_val = biased_digits(tmp_path / "digits.npz")
    text = CONFIG.format(path=tmp_path / "digits.npz")
    plain = minority_predictions(write_and_train(tmp_path / "plain", text).run_dir, x_val)
    weighted = minority_predictions(write_and_train(tmp_path / "weighted", text + f"  class_weight: {class_weight}\n").run_dir, x_val)
    assert weighted > plain + 10, (plain, weighted)


def test_a_class_weight_for_a_class_the_data_lacks_is_one_line_naming_it(tmp_path):
    biased_digits(tmp_path / "digits.npz")
    result = write_and_train(tmp_path, CONFIG.format(path=tmp_path / "digits.npz") + "  class_weight: {nine: 2}\n", check=False)
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: train.class_weight.nine: is not a class of this data; "
                                  "its classes are three, eight (or their indices 0 to 1)", exact=True)


@pytest.mark.parametrize("value, expected", [
    ("balance", "train.class_weight: expected balanced, null or a mapping {class name or index: weight}, received 'balance'"),
    ("{eight: -1}", "train.class_weight.eight: expected a number > 0, received -1"),
    ("{'': 2}", "train.class_weight: expected class names or indices as keys, received ''"),
])
def test_a_wrong_class_weight_is_one_line_naming_its_key(write_config, tiny_config, value, expected):
    result = run_cli("check", tiny_config, "--set", f"train.class_weight={value}")
    assert_one_line_error(result, f"{tiny_config}: {expected}", exact=True)
