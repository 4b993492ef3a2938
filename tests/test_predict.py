"""`cnnlab predict` on PNGs written from known digits, through a tiny run trained once for this module."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnlab.config.experiment import load_config
from cnnlab.data.sources import load_dataset
from cnnlab.data.preprocessing import preprocess_images, preprocessing_for

from conftest import TINY_DIGITS
from conftest import run_cli as run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(runs folder, run folder, test images, their labels, the best model's probabilities for them)."""
    import keras

    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.yaml").write_text(TINY_DIGITS)
    result = run("train", root / "tiny.yaml", "--runs-dir", root / "runs", "-q")
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "runs").iterdir()
    config = load_config(run_dir / "config.yaml")
    splits = load_dataset(config.data, config.train.validation_split, config.seed)
    x, y = splits.x_test[:6], splits.y_test[:6]
    model = keras.models.load_model(run_dir / "best.keras")
    expected = model.predict(preprocess_images(x, preprocessing_for(config.data)), verbose=0)
    return root / "runs", run_dir, x, y, expected


def save(array, path, mode="L"):
    Image.fromarray(array[..., 0] if mode == "L" else np.repeat(array, 3, axis=-1)).save(path)
    return path


@pytest.fixture
def good_png(trained, tmp_path):
    return save(trained[2][0], tmp_path / "good.png")


def predict_json(*args):
    result = run("predict", "--json", "--top-k", "10", *args)
    return result, json.loads(result.stdout)


def probabilities(prediction):
    """{class index: probability} from one JSON prediction; the digit classes are named 0..9."""
    return {int(entry["class"]): entry["probability"] for entry in prediction["top"]}


def assert_probabilities(prediction, expected):
    got = probabilities(prediction)
    np.testing.assert_allclose([got[k] for k in range(10)], expected, atol=1e-5)


def assert_bad_input(result, line, good_png):
    """Exit code 2, exactly one error line on stderr, and the good image still predicted."""
    assert result.exit_code == 2, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"Error: {line}"), result.stderr
    assert "Traceback" not in result.output
    assert f"{good_png}: " in result.stdout


# ---------------------------------------------------------------- what it predicts


def test_probabilities_equal_model_predict_on_the_same_arrays(trained, tmp_path):
    _, run_dir, x, _, expected = trained
    paths = [save(image, tmp_path / f"{i}.png") for i, image in enumerate(x)]
    result, document = predict_json("--run", run_dir, *paths)
    assert result.exit_code == 0, result.output
    assert [p["path"] for p in document["predictions"]] == [str(p) for p in paths]
    for prediction, probs in zip(document["predictions"], expected):
        assert_probabilities(prediction, probs)
        assert prediction["inverted"] is False


def test_text_output_names_the_newest_run_and_the_top_k_classes(trained, good_png):
    runs_dir, run_dir, _, _, expected = trained
    result = run("predict", good_png, "--runs-dir", runs_dir, "--top-k", "2")
    assert result.exit_code == 0, result.output
    first, second = np.argsort(-expected[0], kind="stable")[:2]
    assert result.output.splitlines() == [
        f"Run: {run_dir} (the newest completed run in {runs_dir}; --run RUN_DIR picks another)",
        f"{good_png}: {first} {expected[0][first]:.3f}, {second} {expected[0][second]:.3f}",
    ]


def test_a_folder_gives_its_images_sorted_in_batches(trained, tmp_path):
    _, run_dir, x, _, expected = trained
    folder = tmp_path / "digits"
    (folder / "more").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "more/c.png"]):
        save(x[i], folder / name)
    (folder / "notes.txt").write_text("not an image, and not named like one: skipped")
    result, document = predict_json("--run", run_dir, "--batch-size", "2", folder)
    assert result.exit_code == 0, result.output
    assert [p["path"] for p in document["predictions"]] == [str(folder / n) for n in ("a.png", "b.png", "more/c.png")]
    for prediction, probs in zip(document["predictions"], expected):
        assert_probabilities(prediction, probs)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".gif"])
def test_jpeg_bmp_and_gif_are_read(trained, tmp_path, suffix):
    _, run_dir, x, _, expected = trained
    path = save(x[1], tmp_path / f"digit{suffix}")
    result, document = predict_json("--run", run_dir, path)
    assert result.exit_code == 0, result.output
    if suffix != ".jpg":  # lossless formats give back the very same pixels
        assert_probabilities(document["predictions"][0], expected[1])


def test_an_rgb_image_is_brought_to_grayscale(trained, tmp_path):
    _, run_dir, x, _, expected = trained
    result, document = predict_json("--run", run_dir, save(x[2], tmp_path / "rgb.png", mode="RGB"))
    assert result.exit_code == 0, result.output
    assert_probabilities(document["predictions"][0], expected[2])


def test_a_larger_image_is_resized_to_the_stored_image_shape(trained, tmp_path):
    _, run_dir, x, _, _ = trained
    path = tmp_path / "big.png"
    Image.fromarray(x[0][..., 0]).resize((80, 64), Image.NEAREST).save(path)
    result, document = predict_json("--run", run_dir, path)
    assert result.exit_code == 0, result.output
    assert sum(probabilities(document["predictions"][0]).values()) == pytest.approx(1, abs=1e-5)


def test_a_dark_on_light_image_is_inverted_and_says_so(trained, tmp_path):
    _, run_dir, x, _, expected = trained
    ink = save(255 - x[3], tmp_path / "ink.png")
    result = run("predict", "--run", run_dir, ink)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].startswith(f"{ink} (inverted: light background, unlike the run's training images): ")
    result, document = predict_json("--run", run_dir, ink)
    assert document["predictions"][0]["inverted"] is True
    assert_probabilities(document["predictions"][0], expected[3])


def test_invert_no_keeps_a_dark_on_light_image_as_it_is(trained, tmp_path):
    _, run_dir, x, _, expected = trained
    result, document = predict_json("--run", run_dir, "--invert", "no", save(255 - x[3], tmp_path / "ink.png"))
    assert document["predictions"][0]["inverted"] is False
    assert not np.allclose([probabilities(document["predictions"][0])[k] for k in range(10)], expected[3], atol=1e-5)


def test_invert_yes_inverts_every_image(trained, tmp_path):
    _, run_dir, x, _, _ = trained
    result, document = predict_json("--run", run_dir, "--invert", "yes", save(x[0], tmp_path / "light_on_dark.png"))
    assert document["predictions"][0]["inverted_because"] == "--invert yes"


def test_json_names_the_run_and_lists_problems_too(trained, good_png, tmp_path):
    runs_dir, run_dir, _, _, _ = trained
    result, document = predict_json("--runs-dir", runs_dir, good_png, tmp_path / "missing.png")
    assert result.exit_code == 2
    assert document["run"] == str(run_dir) and document["top_k"] == 10
    assert document["errors"] == [{"path": str(tmp_path / "missing.png"), "error": "not found"}]
    assert len(document["predictions"]) == 1


# ---------------------------------------------------------------- bad input: one line each, the others still predicted


def test_a_missing_file(trained, good_png, tmp_path):
    result = run("predict", "--run", trained[1], tmp_path / "missing.png", good_png)
    assert_bad_input(result, f"{tmp_path / 'missing.png'}: not found", good_png)


def test_a_file_that_is_not_an_image(trained, good_png, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("just text with an image's name")
    assert_bad_input(run("predict", "--run", trained[1], path, good_png), f"{path}: not a PNG, JPEG, BMP or GIF image", good_png)


def test_a_truncated_png(trained, good_png, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])  # the header is whole, the pixel data is cut
    result = run("predict", "--run", trained[1], path, good_png)
    assert_bad_input(result, f"{path}: cannot decode this PNG file (truncated or corrupt): ", good_png)


def test_a_png_cut_inside_its_header(trained, good_png, tmp_path):
    path = tmp_path / "header.png"
    path.write_bytes(good_png.read_bytes()[:20])
    result = run("predict", "--run", trained[1], path, good_png)
    assert_bad_input(result, f"{path}: cannot decode this PNG file (truncated or corrupt): ", good_png)


def test_a_zero_byte_file(trained, good_png, tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_bad_input(run("predict", "--run", trained[1], path, good_png), f"{path}: empty file (0 bytes)", good_png)


def test_an_empty_folder(trained, good_png, tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert_bad_input(run("predict", "--run", trained[1], folder, good_png), f"{folder}: no images (.bmp, .gif, .jpeg, .jpg, .png) in this folder", good_png)


def test_an_image_over_the_pixel_limit(trained, good_png, tmp_path):
    path = save(trained[2][1], tmp_path / "eight.png")
    result = run("predict", "--run", trained[1], "--max-pixels", "63", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: 8x8 is 64 pixels, over the limit of 63 (--max-pixels); not decoded\n"


def png_header_only(width, height):
    """A PNG whose header claims width x height pixels, with a little pixel data: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(1000))  # the start of a huge run of zeros
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, body) for kind, body in ((b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", b"")))


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_decompression_bomb_is_refused_from_its_header(trained, good_png, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    result = run("predict", "--run", trained[1], path, good_png)
    assert_bad_input(result, f"{path}: 100000x100000 is 10,000,000,000 pixels, over the limit of 50,000,000 (--max-pixels)", good_png)


def copy_with_preprocessing(run_dir, tmp_path, **changes):
    """A copy of the trained run whose preprocessing.json has `changes`, as a hand-edited folder would."""
    copy = shutil.copytree(run_dir, tmp_path / "run")
    record = json.loads((copy / "preprocessing.json").read_text())
    (copy / "preprocessing.json").write_text(json.dumps({**record, **changes}))
    return copy


def test_an_image_that_cannot_be_brought_to_the_run_images(trained, good_png, tmp_path):
    run_dir = copy_with_preprocessing(trained[1], tmp_path, color_mode="rgb")
    result = run("predict", "--run", run_dir, good_png)
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {good_png}: cannot be brought to the model's input: it becomes [8, 8, 3] in rgb, "
                             "the run's images are [8, 8, 1]\n")


def test_a_model_that_disagrees_with_the_run_preprocessing(trained, good_png, tmp_path):
    run_dir = copy_with_preprocessing(trained[1], tmp_path, image_shape=[10, 10, 1])
    result = run("predict", "--run", run_dir, good_png)
    assert result.exit_code == 2
    assert result.output == (f"Error: {run_dir / 'best.keras'}: takes inputs of shape [8, 8, 1] but preprocessing.json "
                             "turns the run's [10, 10, 1] images into [10, 10, 1]; the run folder's files disagree\n")


def test_a_run_folder_without_a_model(trained, good_png, tmp_path):
    run_dir = shutil.copytree(trained[1], tmp_path / "run")
    (run_dir / "best.keras").unlink()
    result = run("predict", "--run", run_dir, good_png)
    assert result.exit_code == 2
    assert result.output == f"Error: {run_dir}: no best.keras in this run folder (status completed); train a model first or pick another run\n"


def test_no_completed_run_under_the_runs_folder(trained, good_png, tmp_path):
    failed = shutil.copytree(trained[1], tmp_path / "runs" / "tiny-20991231-235959")
    (failed / "status").write_text("failed\nloss became NaN at epoch 1\n")
    result = run("predict", "--runs-dir", tmp_path / "runs", good_png)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {tmp_path / 'runs'}: no completed run in this folder; ")


def test_no_runs_folder_at_all(good_png, tmp_path):
    result = run("predict", "--runs-dir", tmp_path / "runs", good_png)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {tmp_path / 'runs'}: runs folder not found; ")


def test_the_newest_completed_run_is_used_not_a_newer_failed_one(trained, good_png, tmp_path):
    runs_dir = tmp_path / "runs"
    older = shutil.copytree(trained[1], runs_dir / "tiny-20990101-000000")
    newer = shutil.copytree(trained[1], runs_dir / "tiny-20990101-000000-2")
    shutil.copytree(trained[1], runs_dir / "tiny-20991231-000000")
    (runs_dir / "tiny-20991231-000000" / "status").write_text("interrupted\n")
    result = run("predict", "--runs-dir", runs_dir, good_png)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Run: {newer} (the newest completed run in {runs_dir}")
    assert older != newer


# ---------------------------------------------------------------- the --invert auto rule, without a model


def test_the_invert_rule_compares_the_image_background_with_the_training_one():
    from cnnlab.data.image_files import invert_reason

    light = np.full((8, 8, 1), 230, dtype=np.uint8)
    light[2:6, 3:5] = 10  # a dark stroke in the middle does not change the border
    dark = 255 - light
    assert invert_reason("auto", "dark", light) == "light background, unlike the run's training images"
    assert invert_reason("auto", "dark", dark) is None
    assert invert_reason("auto", "light", dark) == "dark background, unlike the run's training images"
    assert invert_reason("auto", None, light) is None  # unknown convention: never guess
    assert invert_reason("no", "dark", light) is None


def test_an_npz_run_background_is_measured_on_its_training_images(tmp_path):
    from types import SimpleNamespace

    from cnnlab.config.experiment import config_from_text
    from cnnlab.data.images import training_background

    path = tmp_path / "ink.npz"
    np.savez(path, x_train=np.full((5, 8, 8), 250, dtype=np.uint8), y_train=np.arange(5) % 2)
    config = config_from_text(TINY_DIGITS.replace("source: digits", f"source: npz\n  path: {path}"))
    assert training_background(SimpleNamespace(config=config, preprocessing={})) == "light"
    path.unlink()
    assert training_background(SimpleNamespace(config=config, preprocessing={})) is None


def test_tta_of_a_mirror_symmetric_image_with_flip_views_is_the_plain_prediction(tmp_path):
    """--tta on every backend: a config that flips in training gets a mirror view, which changes nothing for an image
    that is its own mirror, so the averaged probabilities are the plain ones."""
    from conftest import train_run

    flipped = TINY_DIGITS.replace("  layers:\n", "  augmentation: [{RandomFlip: {mode: horizontal}}]\n  layers:\n")
    run_dir = train_run(tmp_path, flipped.replace("epochs: 2", "epochs: 1"))
    half = np.random.default_rng(0).integers(0, 256, (8, 4))
    image = tmp_path / "symmetric.png"
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1).astype(np.uint8)).save(image)

    def top(*extra):
        result = run("predict", image, "--run", run_dir, "--top-k", 10, "--invert", "no", "--json", *extra)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    plain, tta = top(), top("--tta", 2)
    assert tta["tta"] == {"views": 2, "names": ["identity", "horizontal flip"]}
    assert [entry["class"] for entry in tta["predictions"][0]["top"]] == [entry["class"] for entry in plain["predictions"][0]["top"]]
    assert [entry["probability"] for entry in tta["predictions"][0]["top"]] == pytest.approx(
        [entry["probability"] for entry in plain["predictions"][0]["top"]], abs=1e-6)
