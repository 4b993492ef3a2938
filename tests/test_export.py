"""`cnnlab export` and `cnnlab predict --model`, on tiny runs trained once for this module.

The exported files are run for real (tf.saved_model.load, TensorFlow Lite interpreters) and
compared with the run's best.keras on the same uint8 images.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.preprocessing import preprocess_images, preprocessing_for

from conftest import TINY_DIGITS, assert_one_line_error
from conftest import run_cli as run, train_run as train

# digits in colour, resized then padded (both must be baked into the export), with Keras' random augmentation
# layers (inactive at inference), BatchNormalization and Dropout
AUGMENTED = """\
name: augmented
seed: 3
data: {source: digits, test_split: 0.2, color_mode: rgb, image_size: [10, 10], pad_to: [12, 12]}
model:
  input_shape: [12, 12, 3]
  layers:
    - RandomFlip: {mode: horizontal}
    - RandomRotation: {factor: 0.05}
    - RandomZoom: {height_factor: 0.1}
    - RandomContrast: {factor: 0.2}
    - Conv2D: {filters: 8, kernel_size: 3, padding: same}
    - BatchNormalization: {}
    - Activation: {activation: relu}
    - MaxPooling2D: {pool_size: 2}
    - Flatten: {}
    - Dropout: {rate: 0.2}
    - Dense: {units: 10, activation: softmax}
train: {epochs: 3, batch_size: 32, validation_split: 0.2}
"""

# TensorFlow Lite has no built-in 3-D max pooling
POOL3D = """\
name: pool3d
seed: 3
data: {source: digits, test_split: 0.2}
model:
  input_shape: [8, 8, 1]
  layers:
    - Reshape: {target_shape: [8, 8, 1, 1]}
    - MaxPooling3D: {pool_size: [2, 2, 1]}
    - Flatten: {}
    - Dense: {units: 10, activation: softmax}
train: {epochs: 1, batch_size: 64, validation_split: 0.2}
"""

FORMATS = "savedmodel, tflite, tflite-dynamic, tflite-int8"


def export(*args):
    result = run("export", *args)
    assert result.exit_code == 0, result.output
    return result


def record(folder):
    return json.loads((folder / "export.json").read_text())


def held_out_images(run_dir, count=None):
    """The run's held-out test split as training made it (uint8), its labels, and best.keras' probabilities for it."""
    import keras

    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    x, y = splits.x_test[:count], splits.y_test[:count]
    model = keras.models.load_model(run_dir / "best.keras")
    return x, y, model.predict(preprocess_images(x, preprocessing_for(config.data)), verbose=0)


def tflite_outputs(path, images):
    """TensorFlow's own interpreter on a .tflite file, one image at a time, dequantised: what a phone would compute."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (given,), (taken,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for image in images:
        interpreter.set_tensor(given["index"], image[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(taken["index"])[0])
    scale, zero_point = taken["quantization"]
    outputs = np.asarray(outputs)
    return (outputs.astype(np.float32) - zero_point) * scale if scale else outputs


def save_pngs(images, folder):
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / f"{i}.png")
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(paths[-1])
    return paths


def predicted(*args):
    """{path: [probability per class]} from cnnlab predict --json."""
    result = run("predict", "--json", "--top-k", "100", *args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    out = {}
    for item in document["predictions"]:
        by_class = {entry["class"]: entry["probability"] for entry in item["top"]}
        out[item["path"]] = [by_class[name] for name in sorted(by_class)]  # the digit classes 0..9 sort as numbers do
    return out, document


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny digits run exported as savedmodel and tflite, and the command's output."""
    run_dir = train(tmp_path_factory.mktemp("tiny"), TINY_DIGITS)
    return run_dir, export(run_dir, "--format", "savedmodel", "--format", "tflite").output


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    """The augmented RGB run exported in every format."""
    run_dir = train(tmp_path_factory.mktemp("augmented"), AUGMENTED)
    export(run_dir, "--format", "all")
    return run_dir


@pytest.fixture(scope="module")
def pool3d(tmp_path_factory):
    return train(tmp_path_factory.mktemp("pool3d"), POOL3D)


# ---------------------------------------------------------------- what export writes


def test_savedmodel_and_tflite_land_in_the_run_export_folder_with_export_json(tiny):
    run_dir, _ = tiny
    folder = run_dir / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.tflite", "saved_model"]
    doc = record(folder)
    assert doc["run"] == str(run_dir.resolve())
    assert doc["class_names"] == [str(i) for i in range(10)]
    assert doc["images"]["shape"] == [8, 8, 1] and doc["images"]["dtype"] == "uint8"
    assert sorted(doc["formats"]) == ["savedmodel", "tflite"]
    saved_model_bytes = sum(p.stat().st_size for p in (folder / "saved_model").rglob("*") if p.is_file())
    assert doc["formats"]["savedmodel"]["size_bytes"] == saved_model_bytes
    assert doc["formats"]["tflite"]["size_bytes"] == (folder / "model.tflite").stat().st_size
    for entry in doc["formats"].values():
        assert entry["input"]["dtype"] == "uint8" and entry["input"]["shape"] == [None, 8, 8, 1]
        assert entry["output"]["dtype"] == "float32" and entry["output"]["shape"] == [None, 10]
        assert entry["check"]["num_images"] == 360  # digits' 1797 images, test_split 0.2
        assert entry["check"]["top1_agreement"] >= 0.995
        assert entry["check"]["required_agreement"] == 0.995
    assert not list(folder.glob(".staging-*"))


def test_export_prints_each_format_with_size_agreement_and_accuracy(tiny):
    run_dir, output = tiny
    doc = record(run_dir / "export")
    lines = output.splitlines()
    assert lines[0] == f"Run: {run_dir}"
    accuracy = doc["formats"]["tflite"]["check"]["accuracy_best_keras"]
    assert lines[1].endswith(f": test split (360 images); best.keras accuracy {accuracy:.4f}")
    assert lines[3].split() == ["FORMAT", "FILE", "SIZE", "AGREEMENT", "ACCURACY", "CHANGE"]
    assert lines[4].split()[:2] == ["savedmodel", "saved_model/"]
    assert lines[5].split()[:2] == ["tflite", "model.tflite"]
    assert lines[-1] == f"Wrote {run_dir / 'export'}/: saved_model, model.tflite, export.json"


def test_the_recorded_agreement_and_accuracy_are_what_the_files_give(tiny):
    run_dir, _ = tiny
    x, y, expected = held_out_images(run_dir)
    got = tflite_outputs(run_dir / "export" / "model.tflite", x)
    check = record(run_dir / "export")["formats"]["tflite"]["check"]
    assert check["top1_agreement"] == pytest.approx(np.mean(got.argmax(1) == expected.argmax(1)))
    assert check["accuracy_best_keras"] == pytest.approx(np.mean(expected.argmax(1) == y))
    assert check["accuracy_exported"] == pytest.approx(np.mean(got.argmax(1) == y))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_savedmodel_takes_uint8_images_with_the_preprocessing_inside(augmented):
    import tensorflow as tf

    x, _, expected = held_out_images(augmented, count=50)
    serve = tf.saved_model.load(str(augmented / "export" / "saved_model")).signatures["serving_default"]
    got = serve(images=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)  # resize 8→10, pad to 12, rescale: all inside


# ---------------------------------------------------------------- predict --model


def test_predict_model_gives_what_predict_run_gives(tiny, tmp_path):
    run_dir, _ = tiny
    paths = save_pngs(held_out_images(run_dir, count=8)[0], tmp_path / "pngs")
    by_run, _ = predicted("--run", run_dir, *paths)
    for model in ("model.tflite", "saved_model"):
        by_model, document = predicted("--model", run_dir / "export" / model, *paths)
        assert document["model"] == str(run_dir / "export" / model)
        assert document["run"] == str(run_dir.resolve())
        for path in by_run:
            assert np.argmax(by_model[path]) == np.argmax(by_run[path])
            np.testing.assert_allclose(by_model[path], by_run[path], atol=1e-5)


def test_predict_model_text_names_the_model_and_its_run(tiny, tmp_path):
    run_dir, _ = tiny
    (png,) = save_pngs(held_out_images(run_dir, count=1)[0], tmp_path / "pngs")
    model = run_dir / "export" / "model.tflite"
    result = run("predict", "--model", model, png, "--top-k", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Model: {model} (tflite, exported from {run_dir.resolve()})"
    assert lines[1].startswith(f"{png}: ")


def test_an_augmented_batchnorm_run_predicts_alike_in_every_float_format(augmented, tmp_path):
    paths = save_pngs(held_out_images(augmented, count=12)[0], tmp_path / "pngs")
    by_run, _ = predicted("--run", augmented, *paths)
    for model in ("saved_model", "model.tflite"):
        by_model, _ = predicted("--model", augmented / "export" / model, *paths)
        for path in by_run:
            np.testing.assert_allclose(by_model[path], by_run[path], atol=1e-5)


def test_predict_model_runs_the_int8_file_and_dequantises_its_output(augmented, tmp_path):
    x = held_out_images(augmented, count=6)[0]
    paths = save_pngs(x, tmp_path / "pngs")
    by_model, _ = predicted("--model", augmented / "export" / "model_int8.tflite", *paths)
    expected = tflite_outputs(augmented / "export" / "model_int8.tflite", x)
    for path, probabilities in zip(paths, expected):
        np.testing.assert_allclose(by_model[str(path)], probabilities, atol=1e-6)


def test_both_tflite_interpreters_give_the_same_probabilities(augmented):
    pytest.importorskip("ai_edge_litert")
    from cnnlab.deploy.inference import load_exported

    x = held_out_images(augmented, count=20)[0]
    for name in ("model.tflite", "model_int8.tflite"):
        litert = load_exported(augmented / "export" / name, interpreter="litert")
        tensorflow = load_exported(augmented / "export" / name, interpreter="tensorflow")
        assert litert.runner.name.startswith("LiteRT") and tensorflow.runner.name.startswith("tf.lite.Interpreter")
        np.testing.assert_allclose(litert.predict(x), tensorflow.predict(x), atol=1e-6)


def test_a_single_sigmoid_unit_exports_as_two_class_probabilities(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target < 2
    np.savez(tmp_path / "zero_one.npz", x_train=np.round(digits.images[keep] * 255 / 16).astype(np.uint8),
             y_train=digits.target[keep], class_names=np.array(["zero", "one"]))
    run_dir = train(tmp_path, f"""\
name: binary
seed: 5
data: {{source: npz, path: {tmp_path / 'zero_one.npz'}, test_split: 0.2}}
model:
  input_shape: [8, 8, 1]
  layers: [Flatten, {{Dense: {{units: 1, activation: sigmoid}}}}]
compile: {{loss: binary_crossentropy}}
train: {{epochs: 1, batch_size: 32, validation_split: 0.2}}
""")
    export(run_dir, "--format", "tflite")
    assert record(run_dir / "export")["formats"]["tflite"]["output"]["shape"] == [None, 2]
    paths = save_pngs(held_out_images(run_dir, count=4)[0], tmp_path / "pngs")
    by_run, _ = predicted("--run", run_dir, *paths)
    by_model, _ = predicted("--model", run_dir / "export" / "model.tflite", *paths)
    for path in by_run:
        np.testing.assert_allclose(by_model[path], by_run[path], atol=1e-5)


def test_a_run_that_did_not_complete_is_exported_with_a_warning(tiny, tmp_path):
    copy = shutil.copytree(tiny[0], tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    (copy / "status").write_text("interrupted\nstopped by the user\n")
    result = export(copy, "--format", "tflite")
    assert result.stderr == (f"Warning: {copy} status is interrupted (stopped by the user): "
                             "exporting its best.keras so far\n")
    assert (copy / "export" / "model.tflite").is_file()


# ---------------------------------------------------------------- quantised formats


def test_every_format_of_an_augmented_run_is_checked_and_recorded(augmented):
    doc = record(augmented / "export")
    assert sorted(doc["formats"]) == sorted(FORMATS.split(", "))
    assert doc["images"] == {**doc["images"], "shape": [8, 8, 3], "color_mode": "rgb"}
    for name in ("savedmodel", "tflite"):
        assert doc["formats"][name]["check"]["top1_agreement"] >= 0.995
    for name in ("tflite-dynamic", "tflite-int8"):
        check = doc["formats"][name]["check"]
        assert check["required_agreement"] is None
        assert check["accuracy_change"] == pytest.approx(check["accuracy_exported"] - check["accuracy_best_keras"])


def test_the_int8_file_takes_uint8_pixels_and_reports_its_accuracy_change(augmented):
    x, y, expected = held_out_images(augmented)
    entry = record(augmented / "export")["formats"]["tflite-int8"]
    assert entry["input"] == {"name": "images", "dtype": "uint8", "shape": [None, 8, 8, 3], "quantization": None}
    assert entry["output"]["dtype"] == "uint8"
    assert entry["output"]["quantization"] == {"scale": 1 / 256, "zero_point": 0}
    assert entry["representative_images"] == "200 of the run's training images, picked with its seed"
    got = tflite_outputs(augmented / "export" / "model_int8.tflite", x)
    check = entry["check"]
    assert check["accuracy_best_keras"] == pytest.approx(np.mean(expected.argmax(1) == y))
    assert check["accuracy_exported"] == pytest.approx(np.mean(got.argmax(1) == y))
    assert check["top1_agreement"] == pytest.approx(np.mean(got.argmax(1) == expected.argmax(1)))
    assert entry["size_bytes"] < record(augmented / "export")["formats"]["tflite"]["size_bytes"]


# ---------------------------------------------------------------- where files go, and exporting again


def test_output_puts_the_files_elsewhere_and_leaves_the_run_alone(tiny, tmp_path):
    run_dir, _ = tiny
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns("export"))
    export(copy, "--format", "tflite", "--output", tmp_path / "phone")
    assert sorted(p.name for p in (tmp_path / "phone").iterdir()) == ["export.json", "model.tflite"]
    assert not (copy / "export").exists()


def test_an_export_removes_what_a_killed_export_left_and_no_other_exports(tiny, tmp_path):
    run_dir, _ = tiny
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns("export"))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = copy / "export" / f".staging-{int(finished.stdout)}-abc"  # a process that is gone, as after a SIGKILL
    running = copy / "export" / f".staging-{os.getpid()}-def"  # a process still at work
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "model.tflite").write_bytes(b"half")
    export(copy, "--format", "tflite")
    assert not killed.exists() and (running / "model.tflite").is_file()
    assert sorted(p.name for p in (copy / "export").iterdir() if not p.name.startswith(".")) == ["export.json", "model.tflite"]


def test_exporting_another_format_keeps_the_earlier_ones(tiny, tmp_path):
    run_dir, _ = tiny
    copy = shutil.copytree(run_dir, tmp_path / run_dir.name, ignore=shutil.ignore_patterns("export"))
    export(copy, "--format", "tflite-dynamic")
    first = (copy / "export" / "model_dynamic.tflite").read_bytes()
    export(copy, "--format", "tflite")
    assert sorted(record(copy / "export")["formats"]) == ["tflite", "tflite-dynamic"]
    assert (copy / "export" / "model_dynamic.tflite").read_bytes() == first


def test_exporting_the_savedmodel_again_replaces_the_folder_whole(tiny, tmp_path):
    import tensorflow as tf

    copy = shutil.copytree(tiny[0], tmp_path / "run")
    (copy / "export" / "saved_model" / "stale.txt").write_text("from an older export")
    export(copy, "--format", "savedmodel")
    assert not (copy / "export" / "saved_model" / "stale.txt").exists()
    assert sorted(p.name for p in (copy / "export").iterdir()) == ["export.json", "model.tflite", "saved_model"]
    tf.saved_model.load(str(copy / "export" / "saved_model")).signatures["serving_default"]


def test_exporting_into_the_folder_of_another_run_is_refused(tiny, augmented, tmp_path):
    run_dir, _ = tiny
    result = run("export", augmented, "--format", "tflite", "--output", run_dir / "export")
    assert_one_line_error(result, f"{run_dir / 'export'}: holds the exports of another run ({run_dir.resolve()}); "
                                  "give --output another folder", exact=True)


# ---------------------------------------------------------------- bad input, one line each, nothing half-written


def test_a_run_without_best_keras(tiny, tmp_path):
    copy = shutil.copytree(tiny[0], tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    (copy / "best.keras").unlink()
    result = run("export", copy, "--format", "tflite")
    assert_one_line_error(result, f"{copy}: no best.keras in this run folder (status completed); "
                                  "train a model first or pick another run", exact=True)
    assert not (copy / "export").exists()


def test_an_unknown_format_lists_the_valid_ones(tiny):
    result = run("export", tiny[0], "--format", "tflite,onnx")
    assert_one_line_error(result, f"--format: unknown export format 'onnx'; valid formats: {FORMATS}, or all. "
                                  "Received: format='tflite,onnx'", exact=True)


def test_a_near_miss_format_is_named(tiny):
    result = run("export", tiny[0], "--format", "tflite-int")
    assert_one_line_error(result, "--format: unknown export format 'tflite-int' (did you mean tflite-int8?)")


def test_a_folder_that_is_not_a_run(tmp_path):
    result = run("export", tmp_path, "--format", "tflite")
    assert_one_line_error(result, f"{tmp_path}: not a run folder (no config.yaml, status or best.keras); "
                                  "expected a folder made by cnnlab train", exact=True)


def test_an_op_tflite_cannot_express_is_one_line_and_nothing_is_written(pool3d):
    result = run("export", pool3d, "--format", "savedmodel,tflite")
    assert_one_line_error(result, f"{pool3d / 'best.keras'}: cannot be exported as tflite: TensorFlow Lite's built-in "
                                  "operators have no MaxPool3D, which the model uses; export a model without it, "
                                  "or --format savedmodel", exact=True)
    assert not (pool3d / "export").exists()  # the SavedModel, which converted, was not published alone


def test_the_same_model_exports_as_a_savedmodel(pool3d, tmp_path):
    export(pool3d, "--format", "savedmodel", "--output", tmp_path / "server")
    assert record(tmp_path / "server")["formats"]["savedmodel"]["check"]["top1_agreement"] >= 0.995


def test_a_failed_check_leaves_the_earlier_export_as_it_was(tiny, tmp_path, monkeypatch):
    copy = shutil.copytree(tiny[0], tmp_path / "run")
    before = {p.relative_to(copy): p.read_bytes() for p in (copy / "export").rglob("*") if p.is_file()}
    monkeypatch.setattr("cnnlab.deploy.export.FLOAT_AGREEMENT", 1.01)  # no export can agree on 101% of the images
    result = run("export", copy, "--format", "tflite,savedmodel")
    assert_one_line_error(result, f"{copy / 'best.keras'}: its savedmodel export agrees with it on only 100.00% of the "
                                  "360 held-out images (")
    assert result.output.rstrip().endswith("below the 101.0% a float export must reach; nothing was written")
    after = {p.relative_to(copy): p.read_bytes() for p in (copy / "export").rglob("*") if p.is_file()}
    assert after == before


def test_predict_model_needs_the_export_json_beside_the_file(tiny, tmp_path):
    lone = shutil.copy(tiny[0] / "export" / "model.tflite", tmp_path / "model.tflite")
    result = run("predict", "--model", lone, "any.png")
    assert_one_line_error(result, f"{lone}: no export.json beside it in {tmp_path}, which names the model's classes and "
                                  "the images it takes; use a file written by cnnlab export RUN_DIR (it writes export.json too)",
                          exact=True)


def test_predict_model_of_a_file_export_json_does_not_list(tiny, tmp_path):
    folder = shutil.copytree(tiny[0] / "export", tmp_path / "export")
    shutil.copy(folder / "model.tflite", folder / "renamed.tflite")
    result = run("predict", "--model", folder / "renamed.tflite", "any.png")
    assert_one_line_error(result, f"{folder / 'renamed.tflite'}: not listed in {folder / 'export.json'} "
                                  "(it lists saved_model, model.tflite); export it again with cnnlab export RUN_DIR --format ...",
                          exact=True)


def test_predict_model_of_a_damaged_tflite_file(tiny, tmp_path):
    folder = shutil.copytree(tiny[0] / "export", tmp_path / "export")
    (folder / "model.tflite").write_bytes(b"not a flatbuffer at all")
    result = run("predict", "--model", folder / "model.tflite", "any.png")
    assert_one_line_error(result, f"{folder / 'model.tflite'}: cannot load as a TensorFlow Lite model: ")


def test_predict_takes_run_or_model_not_both(tiny):
    result = run("predict", "--run", tiny[0], "--model", tiny[0] / "export" / "model.tflite", "any.png")
    assert result.exit_code == 2
    assert "give --run or --model, not both" in result.output
