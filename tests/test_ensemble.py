"""Ensembles of runs (evaluate, predict, export average the members' probabilities) and --tta, on tiny digits runs.

The two members share their seed, so their test split is the same, and differ in
validation_split, so they trained on different images and their val splits differ (as cv
folds do). What the ensemble gives is compared with each member's own output, averaged here.
"""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_DIGITS, assert_one_line_error, run_cli, train_run

OTHER_VAL = TINY_DIGITS.replace("validation_split: 0.2", "validation_split: 0.3").replace("filters: 4", "filters: 6")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """(the folder of two member runs, [the two run folders])."""
    root = tmp_path_factory.mktemp("ensemble")
    runs = [train_run(root, TINY_DIGITS), train_run(root, OTHER_VAL)]
    return root / "runs", runs


def json_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def digit_png(path, image):
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def member_probabilities(run_dir, images):
    """A member's own probabilities on uint8 images, from its best.keras and its recorded preprocessing."""
    import keras

    from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
    from cnnlab.rundir.files import read_json

    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    prep = preprocessing_from_record(read_json(run_dir / "preprocessing.json"))
    return np.asarray(model.predict_on_batch(preprocess_images(images, prep)))


def test_evaluate_of_a_folder_of_runs_scores_the_mean_of_their_probabilities(members):
    from cnnlab.config.experiment import load_config
    from cnnlab.data.sources import load_dataset

    folder, runs = members
    doc = json_of(run_cli("evaluate", folder, "--json"))
    config = load_config(runs[0] / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    mean = np.mean([member_probabilities(run, splits.x_test) for run in runs], axis=0)
    assert doc["split"] == "test" and doc["ensemble"]["members"] == [str(run) for run in runs]
    assert doc["num_correct"] == int((mean.argmax(axis=1) == splits.y_test).sum())
    assert doc["loss"] == pytest.approx(-np.mean(np.log(mean[np.arange(len(mean)), splits.y_test])), rel=1e-5)
    assert (folder / "eval" / "test.json").is_file()


def test_ensemble_refuses_a_split_its_members_do_not_share(members):
    folder, runs = members
    assert_one_line_error(run_cli("evaluate", *runs, "--split", "val"), f"{runs[1]}: its val split is not")


def test_predict_with_several_runs_gives_the_mean_of_their_probabilities(members, tmp_path):
    from sklearn.datasets import load_digits

    _, runs = members
    image = digit_png(tmp_path / "digit.png", load_digits().images[0] * 16)
    own = [json_of(run_cli("predict", image, "--run", run, "--top-k", 10, "--json")) for run in runs]
    both = json_of(run_cli("predict", image, "--run", runs[0], "--run", runs[1], "--top-k", 10, "--json"))

    def by_class(doc):
        return {entry["class"]: entry["probability"] for entry in doc["predictions"][0]["top"]}

    expected = {name: np.mean([by_class(doc)[name] for doc in own]) for name in by_class(own[0])}
    assert by_class(both) == pytest.approx(expected, abs=1e-6)
    assert both["ensemble"]["num_members"] == 2 and both["tta"] is None


def test_the_python_api_opens_a_folder_of_runs_as_one_ensemble(members, tmp_path):
    """cnnlab.load_run of a folder of runs, or of several runs: evaluate and predict give what the commands give."""
    from sklearn.datasets import load_digits

    import cnnlab
    from cnnlab.errors import CnnlabError

    folder, runs = members
    ensemble = cnnlab.load_run(folder)
    assert ensemble.members == tuple(runs) and ensemble.status == "completed"
    assert repr(ensemble) == f"Run({str(folder)!r}, ensemble of 2 runs)"
    report = ensemble.evaluate()
    command = json_of(run_cli("evaluate", folder, "--json"))
    assert (report["num_correct"], report["num_images"]) == (command["num_correct"], command["num_images"])
    assert report["ensemble"]["members"] == [str(run) for run in runs]

    image = digit_png(tmp_path / "digit.png", load_digits().images[0] * 16)
    (given,) = cnnlab.load_run(*runs).predict(image, top_k=10)
    (expected,) = json_of(run_cli("predict", image, "--run", runs[0], "--run", runs[1], "--top-k", 10, "--json"))["predictions"]
    assert given["top"] == expected["top"]
    with pytest.raises(CnnlabError, match="an ensemble of 2 runs has no metrics.json of its own"):
        ensemble.metrics
    with pytest.raises(CnnlabError, match="an ensemble needs at least two completed runs; found 1"):
        cnnlab.load_run(runs[0], runs[0])


def test_members_that_take_other_images_are_named(members, tmp_path):
    _, runs = members
    odd = train_run(tmp_path, TINY_DIGITS.replace("source: digits", "source: digits\n  image_size: [10, 10]")
                    .replace("input_shape: [8, 8, 1]", "input_shape: [10, 10, 1]").replace("epochs: 2", "epochs: 1"))
    assert_one_line_error(run_cli("evaluate", runs[0], odd), f"{odd}: its preprocessing.json image_size is [10, 10]")


def test_evaluate_tta_records_its_views_beside_the_plain_report(members):
    _, runs = members
    doc = json_of(run_cli("evaluate", runs[0], "--tta", 3, "--json"))
    # digits are not flipped in training, so no mirror: a mirrored digit is no digit
    assert doc["tta"] == {"views": 3, "names": ["identity", "shift right 1px", "shift left 1px"]}
    assert doc["files"]["report"] == str(runs[0] / "eval" / "test-tta3.json")
    assert_one_line_error(run_cli("evaluate", runs[0], "--tta", 6), "--tta: expected a number of views from 1 to 5")


@pytest.mark.tensorflow_only
def test_export_of_an_ensemble_with_tta_is_one_model_that_gives_their_mean(members, tmp_path):
    from sklearn.datasets import load_digits

    folder, runs = members
    result = run_cli("export", folder, "--format", "savedmodel,tflite", "--tta", 2)
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "export" / "export.json").read_text())
    assert record["ensemble"]["members"] == [str(run) for run in runs]
    for entry in record["formats"].values():
        assert entry["tta"] == {"views": 2, "names": ["identity", "shift right 1px"]}
        assert entry["check"]["top1_agreement"] == 1.0 and entry["check"]["max_probability_difference"] < 1e-5
    image = digit_png(tmp_path / "digit.png", load_digits().images[3] * 16)
    exported = json_of(run_cli("predict", image, "--model", folder / "export" / "saved_model", "--top-k", 10, "--json"))
    direct = json_of(run_cli("predict", image, "--run", folder, "--tta", 2, "--top-k", 10, "--json"))
    assert exported["tta"] == direct["tta"]
    assert {e["class"]: e["probability"] for e in exported["predictions"][0]["top"]} == pytest.approx(
        {e["class"]: e["probability"] for e in direct["predictions"][0]["top"]}, abs=1e-5)


@pytest.mark.tensorflow_only
def test_an_ensembles_quantised_tflite_files_are_checked_against_the_members_mean(members, tmp_path):
    """tflite-int8 and tflite-dynamic of an ensemble: one file each, run by TensorFlow's own interpreter, scored against
    the mean of the members' probabilities on the test split they share."""
    from cnnlab.config.experiment import load_config
    from cnnlab.data.sources import load_dataset
    from test_export import tflite_outputs

    folder, runs = members
    output = tmp_path / "quantised"
    result = run_cli("export", folder, "--format", "tflite-int8,tflite-dynamic", "--output", output)
    assert result.exit_code == 0, result.output
    record = json.loads((output / "export.json").read_text())
    config = load_config(runs[0] / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    mean = np.mean([member_probabilities(run, splits.x_test) for run in runs], axis=0)
    for name, file in (("tflite-int8", "model_int8.tflite"), ("tflite-dynamic", "model_dynamic.tflite")):
        check = record["formats"][name]["check"]
        got = tflite_outputs(output / file, splits.x_test)
        assert check["accuracy_best_keras"] == pytest.approx(np.mean(mean.argmax(1) == splits.y_test))
        assert check["accuracy_exported"] == pytest.approx(np.mean(got.argmax(1) == splits.y_test))
        assert check["top1_agreement"] == pytest.approx(np.mean(got.argmax(1) == mean.argmax(1)))


def test_a_cv_like_folder_finds_runs_two_levels_down_and_skips_unfinished_ones(members, tmp_path):
    import shutil

    from sklearn.datasets import load_digits

    _, runs = members
    folder = tmp_path / "cv"
    for i, run in enumerate(runs, 1):
        shutil.copytree(run, folder / "folds" / f"fold-{i}", ignore=shutil.ignore_patterns("eval", "export"))
    (folder / "folds" / "fold-3").mkdir()
    (folder / "folds" / "fold-3" / "status").write_text("failed\nout of memory\n")
    image = digit_png(tmp_path / "digit.png", load_digits().images[0] * 16)
    result = run_cli("predict", image, "--run", folder, "--json")
    doc = json_of(result)
    assert result.stderr.startswith(f"Warning: {folder}: left out 1 run folder(s) without a completed best.keras")
    assert doc["ensemble"]["members"] == [str(folder / "folds" / f"fold-{i}") for i in (1, 2)]
    assert doc["ensemble"]["skipped"] == [{"run": str(folder / "folds" / "fold-3"), "why": "status failed: out of memory"}]
