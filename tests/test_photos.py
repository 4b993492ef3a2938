"""The small-photo recipe (configs/photos.yaml) and model.augmentation: Keras' random preprocessing layers, in training only."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab.training import tf_loop as loop
from cnnlab.model import keras_names as registry
from cnnlab.rundir import files as run_files, trained
from cnnlab.inspect import visualize
from cnnlab.model.builder import build_model
from cnnlab.config.experiment import config_from_text, load_config
from cnnlab.errors import ConfigError
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import preprocess_images, preprocessing_for
from cnnlab.training.job import prepare
from conftest import CONFIGS, TINY_DIGITS, assert_one_line_error, run_cli, write_photo_folder

AUGMENTATION = """\
  augmentation:
    - RandomFlip: {mode: horizontal}
    - RandomTranslation: {height_factor: 0.25, width_factor: 0.25}
  layers:
"""
AUGMENTED_DIGITS = TINY_DIGITS.replace("  layers:\n", AUGMENTATION)
PHOTOS = CONFIGS / "photos.yaml"
SMALL = ["--set", "data.image_size=[16, 16]", "--set", "model.input_shape=[16, 16, 3]"]  # the recipe, on 16x16 photos

# Arguments that make each allowed layer change an image in training (a layer whose factors default to 0 would not).
STRONG = {
    "RandomRotation": {"factor": 0.2}, "RandomZoom": {"height_factor": 0.3}, "RandomTranslation": {"height_factor": 0.3, "width_factor": 0.3},
    "RandomShear": {"x_factor": 0.3}, "RandomPerspective": {"factor": 1.0, "scale": 0.5}, "RandomContrast": {"factor": 0.5},
    "RandomBrightness": {"factor": 0.5}, "RandomSaturation": {"factor": 0.9}, "RandomHue": {"factor": 0.5},
    "RandomColorJitter": {"brightness_factor": 0.5, "contrast_factor": 0.5}, "RandomColorDegeneration": {"factor": 0.9},
    "RandomGrayscale": {"factor": 1.0}, "RandomSharpness": {"factor": 0.9}, "RandomGaussianBlur": {"factor": 1.0},
    "RandomInvert": {"factor": 1.0}, "RandomPosterization": {"factor": [1, 2]}, "RandomErasing": {"factor": 1.0},
    "Solarization": {"addition_factor": 0.5, "threshold_factor": 0.5}, "RandomElasticTransform": {"factor": 1.0, "scale": 1.0},
}


def augmented_config(name, kwargs):
    return config_from_text(f"""\
seed: 3
model:
  input_shape: [16, 16, 3]
  augmentation: [{{{name}: {json.dumps(kwargs)}}}]
  layers: [Identity]
""")


def photos_run(tmp_path, *extra):
    """The shipped recipe trained for 2 epochs on 16x16 photos made in tmp_path; returns the run folder."""
    folder = write_photo_folder(tmp_path / "photos")
    result = run_cli("train", PHOTOS, "--set", f"data.path={folder}", *SMALL, "--epochs", 2, "--runs-dir", tmp_path / "runs", "-q", *extra)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def trained_photos(tmp_path_factory):
    return photos_run(tmp_path_factory.mktemp("photos"))


def without_augmentation(run_dir):
    """The run's model rebuilt without model.augmentation, with the run's trained weights."""
    model = keras.models.load_model(run_dir / run_files.MODEL)
    plain = build_model(load_config(run_dir / run_files.CONFIG, overrides=["model.augmentation=null"]))
    plain.set_weights(model.get_weights())  # the random layers have no weights, only generator states
    return plain


# ---------------------------------------------------------------- the config


def test_augmentation_layers_are_read_in_order_and_kept_in_the_resolved_config():
    config = config_from_text(AUGMENTED_DIGITS)
    assert [spec.type for spec in config.model.augmentation] == ["RandomFlip", "RandomTranslation"]
    assert config.model.augmentation[1].path == "model.augmentation[1].RandomTranslation"
    assert config_from_text(config.to_yaml()).raw == config.raw
    assert config_from_text(TINY_DIGITS).raw["model"]["augmentation"] is None


def test_augmentation_must_be_a_list_of_layers():
    with pytest.raises(ConfigError) as info:
        config_from_text(AUGMENTED_DIGITS.replace("    - RandomFlip: {mode: horizontal}\n    - RandomTranslation: "
                                                  "{height_factor: 0.25, width_factor: 0.25}\n", "    RandomFlip: {}\n"))
    assert str(info.value).startswith("model.augmentation: expected a list of Keras random preprocessing layers")


@pytest.mark.parametrize("override, expected", [
    ("model.augmentation[1]={Dense: {units: 3}}",
     "model.augmentation[1]: 'Dense' cannot be an augmentation layer (put it in model.layers): model.augmentation takes Keras' "
     "random preprocessing layers, which act in training only. Valid names: "
     + ", ".join(sorted(registry.AUGMENTATION_LAYERS + registry.MIXING_LAYERS))),
    ("model.augmentation[0]=RandomCrop", "model.augmentation[0]: 'RandomCrop' cannot be an augmentation layer (put it in model.layers)"),
    ("model.augmentation[0]=RandomFlp", "model.augmentation[0]: 'RandomFlp' cannot be an augmentation layer: model.augmentation takes "
                                        "Keras' random preprocessing layers, which act in training only. Did you mean RandomFlip?"),
    ("model.augmentation[0].RandomFlip.mod=vertical", "model.augmentation[0].RandomFlip.mod: unknown argument of RandomFlip (did you mean mode?)"),
    ("model.augmentation[1].RandomTranslation.fill_mode=mirror", "model.augmentation[1].RandomTranslation.fill_mode: Unknown `fill_mode` mirror"),
    ("model.augmentation[2].RandomFlip.mode=vertical", "model.augmentation[2].RandomFlip.mode: not in the config: model.augmentation has 2 entries, [0] to [1]"),
    # Keras takes any RandomFlip mode and flips nothing for one it does not know
    ("model.augmentation[0].RandomFlip.mode=horizontl", "model.augmentation[0].RandomFlip.mode: expected one of horizontal, vertical, "
                                                        "horizontal_and_vertical (did you mean horizontal?), received 'horizontl'; "
                                                        "RandomFlip with any other mode would do nothing"),
])
def test_a_bad_augmentation_layer_is_one_line_at_its_path(write_config, override, expected):
    path = write_config(AUGMENTED_DIGITS)
    result = run_cli("check", path, "--set", override)
    assert_one_line_error(result, f"{path}: {expected}")


def test_set_changes_an_augmentation_argument(write_config):
    result = run_cli("check", write_config(AUGMENTED_DIGITS), "--set", "model.augmentation[0].RandomFlip.mode=vertical")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", registry.AUGMENTATION_LAYERS)
def test_every_allowed_layer_changes_images_in_training_only(name):
    keras.utils.set_random_seed(3)
    model = build_model(augmented_config(name, STRONG.get(name, {})))
    images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(images, training=False)), images)
    trained_on = np.asarray(model(images, training=True))
    assert trained_on.shape == images.shape and not np.allclose(trained_on, images)


def test_a_colour_layer_works_in_the_range_the_rescaled_pixels_are_in():
    # Keras' own default value_range is 0..255: at 0..1 it would add up to 0.5 × 255 to a pixel
    keras.utils.set_random_seed(3)
    model = build_model(augmented_config("RandomBrightness", {"factor": 0.5}))
    images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    brightened = np.asarray(model(images, training=True))
    assert 0 <= brightened.min() and brightened.max() <= 1 and not np.allclose(brightened, images)


# ---------------------------------------------------------------- training: augmentation acts there, and only there


def train_one_epoch(job):
    loop.fit(job.with_train(shuffle=True, batch_parts=1, steps_per_execution=1), [], 1, verbose=0)
    return job.model.get_weights()


@pytest.mark.tensorflow_only  # cnnlab's own loop
def test_the_loop_trains_on_augmented_images(write_config):
    config = load_config(write_config(AUGMENTED_DIGITS))
    augmented = prepare(config)
    plain_config = load_config(write_config(AUGMENTED_DIGITS), overrides=["model.augmentation=null"])
    plain = prepare(plain_config)
    plain.model.set_weights(augmented.model.get_weights())
    after_augmented = train_one_epoch(augmented)
    after_plain = train_one_epoch(plain)
    assert not all(np.allclose(a, b) for a, b in zip(after_augmented, after_plain))


@pytest.mark.tensorflow_only  # cnnlab's own loop
def test_the_loop_draws_the_same_augmentation_as_keras_fit(write_config):
    config = load_config(write_config(AUGMENTED_DIGITS))
    job = prepare(config)
    ours, splits, prep = job.model, job.splits, job.prep
    loop.fit(job.with_train(batch_size=64, shuffle=False, batch_parts=1, steps_per_execution=1), [], 2, verbose=0)
    theirs = prepare(config).model
    theirs.fit(make_dataset(splits.x_train, splits.y_train, prep, 64), epochs=2, verbose=0, shuffle=False)
    for mine, keras_weight in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(mine, keras_weight, atol=1e-5)


def test_predict_gives_what_the_same_weights_give_without_augmentation(trained_photos, tmp_path):
    images = []
    for i, pixels in enumerate(np.random.default_rng(5).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        images.append(pixels)
    result = run_cli("predict", *(tmp_path / f"{i}.png" for i in range(3)), "--run", trained_photos, "--json", "--top-k", 2)
    assert result.exit_code == 0, result.output
    config = load_config(trained_photos / run_files.CONFIG)
    expected = without_augmentation(trained_photos).predict(preprocess_images(np.stack(images), preprocessing_for(config.data)), verbose=0)
    names = json.loads((trained_photos / run_files.CLASS_NAMES).read_text())
    for item, probabilities in zip(json.loads(result.output)["predictions"], expected):
        got = {top["class"]: top["probability"] for top in item["top"]}
        assert got == pytest.approx({name: float(p) for name, p in zip(names, probabilities)}, abs=1e-6)


def test_evaluate_gives_what_the_same_weights_give_without_augmentation(trained_photos):
    from cnnlab.inspect.evaluate import load_split

    result = run_cli("evaluate", trained_photos, "--json")
    assert result.exit_code == 0, result.output
    scored = json.loads(result.output)
    held_out = load_split(trained.load_trained_run(trained_photos), None)
    from cnnlab.model.losses import make_loss

    config = load_config(trained_photos / run_files.CONFIG)
    prep = preprocessing_for(config.data)
    plain = without_augmentation(trained_photos)
    plain.compile(loss=make_loss(config.compile.loss, config.compile.loss_kwargs), metrics=["accuracy"])  # label smoothing
    expected = plain.evaluate(make_dataset(held_out.images, held_out.labels, prep, 32), verbose=0, return_dict=True)
    assert scored["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    assert scored["accuracy"] == pytest.approx(expected["accuracy"])


# ---------------------------------------------------------------- the recipe


def test_the_recipe_passes_check_with_the_augmentation_the_issue_names():
    result = run_cli("check", PHOTOS)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"{PHOTOS}: OK, 99,386 parameters"  # as the config's comment says
    config = load_config(PHOTOS)
    assert [spec.type for spec in config.model.augmentation] == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                                                                 "RandomContrast", "RandomBrightness"]
    kinds = {spec.type for spec in config.model.layers}
    assert {"BatchNormalization", "GlobalAveragePooling2D"} <= kinds and "Flatten" not in kinds
    # a fixed schedule run to its end, the last epoch's model kept: no early stopping on a few dozen validation photos
    assert config.train.callbacks["early_stopping"] is None and config.train.callbacks["reduce_lr"] is None
    assert config.train.callbacks["checkpoint"]["save_best_only"] is False
    assert config.compile.optimizer.kwargs["learning_rate"]["schedule"] == "OneCycle" and config.data.test_split == 0


def test_the_recipe_trains_on_a_folder_of_photos(trained_photos):
    assert run_files.read_status(trained_photos).state == "completed"
    metrics = json.loads((trained_photos / run_files.METRICS).read_text())
    assert metrics["epochs_run"] == 2 and metrics["test"] is None  # no test split: photos held apart score it (evaluate --data)
    assert json.loads((trained_photos / run_files.CLASS_NAMES).read_text()) == ["across", "down"]


def test_visualize_draws_the_augmented_training_images_and_no_feature_maps_of_the_random_layers(trained_photos):
    result = run_cli("visualize", trained_photos)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Augmentation: random_flip, random_rotation, random_zoom, random_translation, random_contrast, random_brightness " \
           "(augmentation.png: 4 training images, 5 draws each)" in lines
    maps = next(line for line in lines if line.startswith("Feature maps: "))
    assert "random" not in maps and maps.startswith("Feature maps: conv2d, ")
    with Image.open(trained_photos / "visualize" / "augmentation.png") as picture:
        assert picture.size[0] > 600 and np.asarray(picture.convert("L"), dtype=float).var() > 0


def test_feature_maps_are_those_of_the_same_weights_without_augmentation(trained_photos):
    result = visualize.visualize_run(trained_photos, layer="re_lu")
    plain = without_augmentation(trained_photos)
    expected = keras.Model(plain.input, plain.get_layer("re_lu").output)(result.model_input[np.newaxis])
    np.testing.assert_allclose(result.feature_maps["re_lu"], np.asarray(expected)[0], rtol=1e-5, atol=1e-6)


def test_the_augmented_draws_differ_from_the_image_and_repeat_with_the_seed(trained_photos):
    model = keras.models.load_model(trained_photos / run_files.MODEL)
    layers = visualize.augmentation_layers(model)
    assert [type(layer).__name__ for layer in layers] == [spec.type for spec in load_config(PHOTOS).model.augmentation]
    images = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    draws = visualize.augmented(layers, images, 3, seed=7)
    assert draws.shape == (2, 3, 16, 16, 3)
    np.testing.assert_array_equal(draws, visualize.augmented(layers, images, 3, seed=7))
    assert not np.allclose(draws[:, 0], images) and not np.allclose(draws[:, 0], draws[:, 1])
