"""`cnnlab evaluate` on a tiny digits run trained once for this module."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import preprocessing_for

from conftest import TINY_DIGITS, assert_one_line_error
from conftest import run_cli as run, train_run as train

TRAIN_FILES = ("config.yaml", "best.keras", "history.csv", "metrics.json", "class_names.json", "env.json", "status",
               "preprocessing.json", "loss.png", "accuracy.png", "model_summary.txt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch digits run, and what train wrote, byte for byte, before any evaluation."""
    run_dir = train(tmp_path_factory.mktemp("trained"), TINY_DIGITS)
    return run_dir, {name: (run_dir / name).read_bytes() for name in TRAIN_FILES}


@pytest.fixture(scope="module")
def evaluated(trained):
    run_dir, _ = trained
    result = run("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    return run_dir, result.output, json.loads((run_dir / "eval" / "test.json").read_text())


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run that a test may change."""
    return shutil.copytree(trained[0], tmp_path / trained[0].name)


def keras_scores(run_dir, split):
    import keras

    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    x, y = (splits.x_test, splits.y_test) if split == "test" else (splits.x_val, splits.y_val)
    model = keras.models.load_model(run_dir / "best.keras")
    return model.evaluate(make_dataset(x, y, preprocessing_for(config.data), 64), verbose=0, return_dict=True), len(y)


def test_evaluate_writes_the_report_and_both_figures(evaluated):
    run_dir, _, _ = evaluated
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["test.json", "test_confusion_matrix.png", "test_misclassified.png"]
    for name in ("test_confusion_matrix.png", "test_misclassified.png"):
        with Image.open(run_dir / "eval" / name) as image:
            assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 200


def test_evaluate_leaves_what_train_wrote_untouched(trained, evaluated):
    run_dir, before = trained
    assert {name: (run_dir / name).read_bytes() for name in TRAIN_FILES} == before


def test_accuracy_and_loss_equal_keras_evaluate_on_the_test_split(evaluated):
    run_dir, _, report = evaluated
    scores, count = keras_scores(run_dir, "test")
    assert report["split"] == "test" and report["num_images"] == count == 360
    assert report["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-7)
    assert report["loss"] == pytest.approx(scores["loss"], rel=1e-6)


def test_report_agrees_with_itself(evaluated):
    _, _, report = evaluated
    counts = np.asarray(report["confusion_matrix"]["counts"])
    assert counts.shape == (10, 10) and counts.sum() == 360
    assert np.trace(counts) == report["num_correct"] == round(report["accuracy"] * 360)
    assert [row["support"] for row in report["per_class"]] == counts.sum(axis=1).tolist()
    assert [row["class"] for row in report["per_class"]] == [str(i) for i in range(10)]
    confidences = [m["confidence"] for m in report["worst_mistakes"]]
    assert confidences == sorted(confidences, reverse=True) and len(confidences) == min(25, 360 - report["num_correct"])
    assert all(m["true"] != m["predicted"] for m in report["worst_mistakes"])


def test_report_gives_wilsons_interval_of_its_own_count(evaluated):
    """The interval brackets the accuracy and is Wilson's for num_correct of num_images (the score test's two roots)."""
    _, _, report = evaluated
    k, n, ci = report["num_correct"], report["num_images"], report["accuracy_ci95"]
    assert ci["low"] < report["accuracy"] < ci["high"]
    z2 = 1.959963984540054 ** 2
    roots = sorted(np.roots([1 + z2 / n, -(2 * k / n + z2 / n), (k / n) ** 2]).real)
    assert [ci["low"], ci["high"]] == pytest.approx(roots, abs=1e-12)


def test_output_prints_scores_and_a_per_class_table(evaluated):
    run_dir, output, report = evaluated
    lines = output.splitlines()
    assert lines[0] == f"Run: {run_dir}"
    assert lines[1].startswith("Data: digits: ") and lines[1].endswith("test split (360 images)")
    assert lines[2] == f"Loss: {report['loss']:.4f}"
    ci = report["accuracy_ci95"]
    assert lines[3] == f"Accuracy: {report['accuracy']:.3f} ({report['num_correct']}/360, 95% CI {ci['low']:.3f}–{ci['high']:.3f})"
    assert lines[5].split() == ["class", "precision", "recall", "f1-score", "support"]
    first = report["per_class"][0]
    assert lines[6].split() == ["0", f"{first['precision']:.4f}", f"{first['recall']:.4f}", f"{first['f1']:.4f}", str(first["support"])]
    assert lines[-1] == f"Wrote {run_dir / 'eval'}/: test.json, test_confusion_matrix.png, test_misclassified.png"


def test_evaluating_twice_writes_the_same_report(evaluated):
    run_dir, _, _ = evaluated
    first = (run_dir / "eval" / "test.json").read_bytes()
    assert run("evaluate", run_dir).exit_code == 0
    assert (run_dir / "eval" / "test.json").read_bytes() == first


def test_json_prints_the_reports_numbers_and_the_files_written(run_copy):
    result = run("evaluate", run_copy, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document = json.loads(result.stdout)
    report = json.loads((run_copy / "eval" / "test.json").read_text())
    assert {key: document[key] for key in report} == report
    assert document["run_status"] == {"state": "completed", "reason": None}
    assert document["files"] == {"report": str(run_copy / "eval" / "test.json"),
                                 "confusion_matrix": str(run_copy / "eval" / "test_confusion_matrix.png"),
                                 "misclassified": str(run_copy / "eval" / "test_misclassified.png")}


def test_a_completed_run_is_scored_without_a_warning(trained):
    assert run("evaluate", trained[0]).stderr == ""


def test_an_unfinished_run_is_scored_with_one_warning_line(run_copy):
    (run_copy / "status").write_text("interrupted\nstopped by the user\n")
    result = run("evaluate", run_copy)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Warning: {run_copy} status is interrupted (stopped by the user): scoring its best.keras so far\n"
    assert result.stdout.splitlines()[0] == f"Run: {run_copy}"


def test_an_unfinished_run_warns_beside_the_json_too(run_copy):
    (run_copy / "status").write_text("running\n")
    result = run("evaluate", run_copy, "--json")
    assert result.stderr == f"Warning: {run_copy} status is running: scoring its best.keras so far\n"
    assert json.loads(result.stdout)["run_status"] == {"state": "running", "reason": None}


def test_bad_data_for_an_unfinished_run_is_the_error_line_alone(run_copy, tmp_path):
    (run_copy / "status").write_text("interrupted\nstopped by the user\n")
    path = tmp_path / "big.npz"
    np.savez(path, x_train=np.zeros((4, 10, 10), dtype=np.uint8), y_train=np.arange(4))
    assert_one_line_error(run("evaluate", run_copy, "--data", path), f"npz: {path}: images are 10x10x1")


def test_split_val_scores_the_validation_split(run_copy):
    result = run("evaluate", run_copy, "--split", "val")
    assert result.exit_code == 0, result.output
    report = json.loads((run_copy / "eval" / "val.json").read_text())
    scores, count = keras_scores(run_copy, "val")
    assert report["num_images"] == count == json.loads((run_copy / "metrics.json").read_text())["num_val"]
    assert report["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-7)
    assert (run_copy / "eval" / "val_confusion_matrix.png").is_file()


def test_data_option_scores_every_image_of_an_npz(run_copy, tmp_path, evaluated):
    config = load_config(run_copy / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    np.savez(tmp_path / "digits8.npz", x_train=splits.x_test, y_train=splits.y_test)
    result = run("evaluate", run_copy, "--data", tmp_path / "digits8.npz")
    assert result.exit_code == 0, result.output
    report = json.loads((run_copy / "eval" / "data-digits8.json").read_text())
    assert report["num_images"] == 360
    assert report["accuracy"] == pytest.approx(evaluated[2]["accuracy"], abs=1e-7)  # the same images as the test split
    assert report["data"].startswith(f"npz: {tmp_path / 'digits8.npz'}")


def test_data_with_images_of_another_size_is_refused(run_copy, tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, x_train=np.zeros((4, 10, 10), dtype=np.uint8), y_train=np.arange(4))
    result = run("evaluate", run_copy, "--data", path)
    assert_one_line_error(result, f"npz: {path}: images are 10x10x1 but the run was trained on 8x8x1 images")
    assert not (run_copy / "eval" / "data-big.json").exists()


def test_split_and_data_together_are_refused(run_copy, tmp_path):
    result = run("evaluate", run_copy, "--split", "val", "--data", tmp_path)
    assert result.exit_code == 2
    assert "Error: give --split or --data, not both" in result.output


def test_a_missing_run_folder(tmp_path):
    assert_one_line_error(run("evaluate", tmp_path / "nope"), f"{tmp_path / 'nope'}: run folder not found")


def test_a_folder_that_is_not_a_run(tmp_path):
    assert_one_line_error(run("evaluate", tmp_path), f"{tmp_path}: not a run folder (no config.yaml, status or best.keras)")


def test_a_run_without_its_model(run_copy):
    (run_copy / "best.keras").unlink()
    assert_one_line_error(run("evaluate", run_copy), f"{run_copy}: no best.keras in this run folder (status completed)")


def test_a_corrupt_model_file(run_copy):
    (run_copy / "best.keras").write_bytes(b"not a zip archive")
    assert_one_line_error(run("evaluate", run_copy), f"{run_copy / 'best.keras'}: cannot load the model: ")


def test_a_run_without_a_test_split_is_scored_on_val_and_refuses_split_test(tmp_path):
    run_dir = train(tmp_path, TINY_DIGITS.replace("test_split: 0.2", "test_split: 0.0").replace("epochs: 2", "epochs: 1"))
    assert_one_line_error(run("evaluate", run_dir, "--split", "test"), "digits: scikit-learn's bundled load_digits() (1797 images, 8x8): has no test split")
    result = run("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "eval" / "val.json").read_text())["num_images"] == 360
