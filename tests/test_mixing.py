"""MixUp and CutMix in model.augmentation: training batches carry soft labels, and the run evaluates on class indices."""

import json

import numpy as np
import pytest

from cnnlab.rundir import files as run_files
from conftest import TINY_DIGITS, assert_one_line_error, run_cli, train_run

MIXUP = TINY_DIGITS.replace("model:\n", "model:\n  augmentation:\n    - MixUp: {alpha: 0.4}\n")


def test_mixup_trains_on_soft_labels_and_the_run_evaluates(tmp_path):
    from cnnlab.config.experiment import load_config
    from cnnlab.data.array_batches import ArrayBatches
    from cnnlab.training.job import prepare
    from cnnlab.training.keras_fit import batch_mixer

    run_dir = train_run(tmp_path, MIXUP)
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    assert np.isfinite(metrics["final"]["loss"]) and "val_accuracy" in metrics["best"]
    job = prepare(load_config(run_dir / run_files.CONFIG))
    batches = ArrayBatches(job.splits.x_train, job.splits.y_train, job.prep, 64, seed=7, mix=batch_mixer(job.config, 10))
    images, labels = batches[0]
    assert labels.shape == (64, 10) and np.allclose(labels.sum(axis=1), 1)
    assert ((labels > 0) & (labels < 1)).any()  # mixed pairs: soft labels, not one-hot
    result = run_cli("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / run_files.EVAL_DIR / "test.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


def test_mixup_with_a_loss_that_cannot_take_soft_labels_is_one_line(write_config):
    config = write_config(MIXUP)
    result = run_cli("check", config, "--set", "compile.loss=mean_squared_error")
    assert_one_line_error(result, f"{config}: model.augmentation[0]: MixUp mixes labels, which then need compile.loss "
                                  "categorical_crossentropy")


def test_cutmix_pastes_a_patch_and_gives_the_pasted_class_its_share_of_the_area(tmp_path, write_config):
    """Noise images, each its own class: an image's label keeps, for its own class, exactly the share of pixels CutMix left
    it, and the run trains and evaluates with CutMix in the config."""
    import keras

    from cnnlab.config.experiment import load_config
    from cnnlab.model.mixing import make_mixing_layers, mix_batch

    cutmix = TINY_DIGITS.replace("model:\n", "model:\n  augmentation:\n    - CutMix: {factor: 1.0}\n")
    config = load_config(write_config(cutmix))
    images = np.random.default_rng(0).uniform(0, 1, (10, 64, 64, 1)).astype("float32")  # no two pixels alike
    mixed, labels = mix_batch(make_mixing_layers(config), images, np.arange(10), 10)
    mixed, labels = keras.ops.convert_to_numpy(mixed), keras.ops.convert_to_numpy(labels)
    kept = (mixed == images).mean(axis=(1, 2, 3))
    assert np.allclose(labels.sum(axis=1), 1) and (kept < 1).any()
    # Keras weighs the label by the box's real-valued area; the pixels pasted are the grid points inside it, which
    # differ by less than one row and one column: (64 + 64 + 1) / 64² of the image
    assert labels[np.arange(10), np.arange(10)] == pytest.approx(kept, abs=129 / 64**2)

    run_dir = train_run(tmp_path, cutmix)
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    assert np.isfinite(metrics["final"]["loss"]) and 0 <= metrics["test"]["accuracy"] <= 1
