"""`cnnlab evaluate --split train --worst N`: a mislabeled training image is among the highest losses."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli as run, train_run as train

CONFIG = """\
name: colours
seed: 3
data: {{source: image_folder, path: {folder}, image_size: [8, 8], color_mode: rgb}}
model:
  input_shape: [8, 8, 3]
  layers:
    - Conv2D: {{filters: 4, kernel_size: 3, activation: relu}}
    - GlobalAveragePooling2D: {{}}
    - Dense: {{units: 2, activation: softmax}}
compile: {{optimizer: {{name: adam, learning_rate: 0.05}}}}
train: {{epochs: 12, batch_size: 8, validation_split: 0.1}}
"""


def write_colour_folder(root, per_class=20, seed=0):
    """Reddish images under red/, bluish ones under blue/, and one more red image filed under blue/ (the mislabeled one)."""
    rng = np.random.default_rng(seed)
    colours = {"red": (200, 40, 40), "blue": (40, 40, 200)}
    for name in colours:
        (root / name).mkdir(parents=True)
    def save(colour, path):
        pixels = np.asarray(colour) + rng.normal(0, 25, (8, 8, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    for name, colour in colours.items():
        for i in range(per_class):
            save(colour, root / name / f"{i:02d}.png")
    mislabeled = root / "blue" / "zz_actually_red.png"
    save(colours["red"], mislabeled)
    return mislabeled


@pytest.fixture(scope="module")
def worst(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardest")
    mislabeled = write_colour_folder(root / "colours")
    run_dir = train(root, CONFIG.format(folder=root / "colours"))
    result = run("evaluate", run_dir, "--split", "train", "--worst", 3, "--json")
    assert result.exit_code == 0, result.output
    return run_dir, mislabeled, json.loads(result.output)


def test_the_mislabeled_training_image_is_among_the_three_highest_losses(worst):
    _, mislabeled, document = worst
    files = [entry["file"] for entry in document["highest_loss"]]
    assert str(mislabeled) in files
    entry = document["highest_loss"][files.index(str(mislabeled))]
    assert (entry["label"], entry["predicted"]) == ("blue", "red")


def test_the_losses_are_ranked_highest_first_and_match_the_confidence(worst):
    _, _, document = worst
    entries = document["highest_loss"]
    assert [e["rank"] for e in entries] == [1, 2, 3]
    losses = [e["loss"] for e in entries]
    assert losses == sorted(losses, reverse=True)
    for e in entries:  # a wrong prediction's loss is -log(1 - its confidence) between two classes
        if e["label"] != e["predicted"]:
            assert e["loss"] == pytest.approx(-np.log(1 - e["confidence"]), rel=1e-4)


def test_the_contact_sheet_is_written_and_the_table_printed(worst):
    run_dir, mislabeled, document = worst
    sheet = run_dir / "eval" / "train_highest_loss.png"
    assert document["files"]["highest_loss"] == str(sheet)
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size[0] >= 400
    result = run("evaluate", run_dir, "--split", "train", "--worst", 2)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("The 2 train images of highest loss (label is the one on file):")
    assert lines[at + 1].split() == ["rank", "image", "label", "predicted", "confidence", "loss"]
    assert lines[at + 2].split()[0] == "1" and len(lines[at + 2].split()) == 6
    assert lines[-1].endswith("train.json, train_confusion_matrix.png, train_misclassified.png, train_highest_loss.png")


def test_worst_must_be_a_positive_count(worst):
    result = run("evaluate", worst[0], "--split", "train", "--worst", 0)
    assert result.exit_code == 2 and "--worst" in result.output and "Traceback" not in result.output
