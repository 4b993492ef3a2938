"""Training from the user's own data: an image folder and an npz file, made inside the tests."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnlab.cli import main

from conftest import train_run as train

TINY_MODEL = """\
model:
  input_shape: [{h}, {w}, {c}]
  layers:
    - Conv2D: {{filters: 4, kernel_size: 3, activation: relu}}
    - GlobalAveragePooling2D
    - Dense: {{units: {k}, activation: softmax}}
train:
  epochs: 1
  batch_size: 8
"""


def make_image_folder(root, classes=("cats", "dogs"), per_class=10, size=(20, 16)):
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (size[1], size[0], 3), dtype=np.uint8) + 120 * label
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_train_from_an_rgb_image_folder(tmp_path):
    folder = make_image_folder(tmp_path / "photos")
    text = f"data:\n  source: image_folder\n  path: {folder}\n  image_size: [12, 12]\n  color_mode: rgb\n  test_split: 0.2\n"
    run_dir = train(tmp_path, text + TINY_MODEL.format(h=12, w=12, c=3, k=2))
    assert json.loads((run_dir / "class_names.json").read_text()) == ["cats", "dogs"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_train"] + metrics["num_val"] + metrics["num_test"] == 20
    assert metrics["test"] is not None


def train_on_npz(tmp_path, **split_sizes):
    """Trains the tiny model on an .npz of random 10x10 images in 3 classes, `split_sizes` images per split
    (train=40, test=9, ...); returns the run folder and its metrics."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, size in split_sizes.items():
        arrays[f"x_{split}"] = rng.integers(0, 256, (size, 10, 10), dtype=np.uint8)
        arrays[f"y_{split}"] = np.arange(size) % 3
    path = tmp_path / "arrays.npz"
    np.savez(path, **arrays)
    run_dir = train(tmp_path, f"data:\n  source: npz\n  path: {path}\n" + TINY_MODEL.format(h=10, w=10, c=1, k=3))
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def test_train_from_an_npz_with_its_own_test_split(tmp_path):
    run_dir, metrics = train_on_npz(tmp_path, train=40, test=9)
    assert (metrics["num_train"], metrics["num_val"], metrics["num_test"]) == (32, 8, 9)
    assert json.loads((run_dir / "class_names.json").read_text()) == ["0", "1", "2"]


def test_train_on_an_npz_with_its_own_validation_split_then_evaluate_it(tmp_path):
    run_dir, metrics = train_on_npz(tmp_path, train=30, val=7)
    assert (metrics["num_train"], metrics["num_val"], metrics["num_test"]) == (30, 7, 0)

    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--split", "val"])

    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "eval" / "val.json").read_text())
    assert report["num_images"] == 7
    assert report["accuracy"] == pytest.approx(metrics["final"]["val_accuracy"], abs=1e-6)
