"""Transfer learning: a keras.applications backbone (model.backbone) under a head.

No ImageNet weights here (no network): the backbones have random weights, or weights
that a test writes itself, under the exact file name Keras would download or at a path.
"""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab import builder, runs
from cnnlab.config import config_from_text
from cnnlab.errors import ConfigError
from conftest import assert_one_line_error, run_cli

SIZE = 32  # the smallest input keras.applications' MobileNets take

CONFIG = """\
name: transfer
seed: 7
data: {{source: image_folder, path: {photos}, color_mode: rgb, image_size: [32, 32], test_split: 0.25}}
model:
  input_shape: [32, 32, 3]
  backbone: {backbone}
  layers:
    - Dropout: {{rate: 0.2}}
    - Dense: {{units: 2, activation: softmax}}
compile:
  optimizer: {{name: adam, learning_rate: 1.0e-3}}
train:
  epochs: {epochs}
  batch_size: 8
{fine_tune}"""


def config_text(photos, backbone, epochs=2, fine_tune=""):
    return CONFIG.format(photos=photos, backbone=backbone, epochs=epochs, fine_tune=fine_tune)


def check(write_config, text, *args):
    return run_cli("check", write_config(text), *args)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two classes of 12 RGB photos each, darker and lighter noise."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cats", "dogs")):
        (root / name).mkdir()
        for i in range(12):
            pixels = rng.integers(0, 100, (SIZE, SIZE, 3), dtype=np.uint8) + 120 * label
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def read_photos(folder):
    return np.stack([np.asarray(Image.open(path)) for path in sorted(folder.glob("*/*.png"))]).astype("float32")


def train(root, text):
    root.mkdir(exist_ok=True)
    (root / "config.yaml").write_text(text)
    return run_cli("train", root / "config.yaml", "--runs-dir", root / "runs", "-q")


def only_run(root):
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


# ---------------------------------------------------------------- the config


def test_an_unknown_backbone_lists_the_keras_applications_models(write_config, photos):
    result = check(write_config, config_text(photos, "{name: MobileNetV22, weights: null}", fine_tune=""))
    assert_one_line_error(result, "")
    line = result.output.strip()
    assert "model.backbone.name: unknown keras.applications model 'MobileNetV22'. Did you mean MobileNetV2? Valid names: ConvNeXtBase," in line
    assert "EfficientNetV2B0" in line and "ResNet50" in line


def test_a_backbone_argument_is_checked_against_its_constructor(write_config, photos):
    result = check(write_config, config_text(photos, "{name: MobileNet, weights: null, alpah: 0.25}", fine_tune=""))
    assert_one_line_error(result, "")
    assert "model.backbone.alpah: unknown argument of keras.applications.MobileNet (did you mean alpha?); valid arguments: alpha," in result.output


def test_the_top_is_never_the_backbones(write_config, photos):
    result = check(write_config, config_text(photos, "{name: MobileNet, weights: null, include_top: true}", fine_tune=""))
    assert_one_line_error(result, "")
    assert result.output.strip().endswith("model.backbone.include_top: is always false: the head is model.layers; remove it here")


def test_a_backbone_takes_rgb_images(write_config, photos):
    text = config_text(photos, "{name: MobileNet, weights: null}", fine_tune="").replace("[32, 32, 3]", "[32, 32, 1]")
    result = check(write_config, text)
    assert_one_line_error(result, "")
    assert "model.input_shape: a keras.applications backbone takes RGB images: expected [height, width, 3]" in result.output


def test_an_input_smaller_than_the_family_takes_is_one_line(write_config, photos):
    text = config_text(photos, "{name: MobileNet, weights: null}", fine_tune="").replace("[32, 32, 3]", "[16, 16, 3]")
    result = check(write_config, text)
    assert_one_line_error(result, "")
    assert "model.input_shape: Input size must be at least 32x32" in result.output


def test_the_pixels_stay_0_to_255_for_a_backbone(photos):
    config = config_from_text(config_text(photos, "{name: MobileNet, weights: null}", fine_tune=""))
    assert config.data.rescale == 1.0 and config.raw["data"]["rescale"] == 1.0
    scaled = config_text(photos, "{name: MobileNet, weights: null}", fine_tune="").replace("color_mode: rgb", "color_mode: rgb, rescale: 0.00392156862745098")
    with pytest.raises(ConfigError) as error:
        config_from_text(scaled)
    assert str(error.value).startswith("data.rescale: must be 1 with model.backbone: the model scales the pixels 0..255 itself")


# ---------------------------------------------------------------- preprocess_input inside the model


@pytest.mark.parametrize("name, layer", [
    ("MobileNetV2", "Rescaling"),  # "tf" mode: x / 127.5 - 1
    ("DenseNet121", "Rescaling"),  # "torch" mode: x / 255, minus ImageNet's mean, over its standard deviation, per channel
    ("ResNet50", "Dense"),  # "caffe" mode: RGB to BGR, minus ImageNet's mean
])
def test_the_familys_preprocess_input_is_a_layer_of_the_model(name, layer, tmp_path):
    import importlib

    from cnnlab import backbones

    constructor = getattr(keras.applications, name)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, backbones.apply_preprocess_input(inputs, constructor))
    model.save(tmp_path / "preprocess.keras")
    loaded = keras.models.load_model(tmp_path / "preprocess.keras")  # safe mode: no Lambda, no custom objects
    assert [type(lay).__name__ for lay in loaded.layers[1:]] == [layer]
    pixels = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3)).astype("float32")
    expected = importlib.import_module(f"keras.applications.{backbones.family(constructor)}").preprocess_input(pixels.copy())
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected, rtol=1e-5, atol=1e-4)


def test_a_family_that_preprocesses_inside_its_own_model_gets_no_layer():
    from cnnlab import backbones

    inputs = keras.Input((4, 4, 3))
    assert backbones.apply_preprocess_input(inputs, keras.applications.MobileNetV3Small) is inputs


# ---------------------------------------------------------------- weights


CACHED_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"  # what Keras downloads for alpha 0.35 at 96x96
CACHED_BACKBONE = "{name: MobileNetV2, weights: WEIGHTS, alpha: 0.35, pooling: avg}"


def cached_config(photos, weights):
    return config_from_text(config_text(photos, CACHED_BACKBONE.replace("WEIGHTS", weights), fine_tune="")
                            .replace("[32, 32", "[96, 96"))


def random_mobilenet_v2(path):
    """A random MobileNetV2 (alpha 0.35, 96x96), saved in the HDF5 format of Keras' own weights files; returns its weights."""
    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None, pooling="avg")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model.get_weights()


def test_imagenet_weights_are_read_from_the_keras_cache_without_the_network(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # CNNLAB_OFFLINE is set for every test
    expected = random_mobilenet_v2(tmp_path / "keras" / "models" / CACHED_NAME)
    model = builder.build_model(cached_config(photos, "imagenet"))
    loaded = builder.find_backbone(model).get_weights()
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)


def test_weights_are_read_from_a_file_the_config_names(photos, tmp_path):
    expected = random_mobilenet_v2(tmp_path / "mine.h5")
    model = builder.build_model(cached_config(photos, str(tmp_path / "mine.h5")))
    for got, want in zip(builder.find_backbone(model).get_weights(), expected):
        np.testing.assert_array_equal(got, want)


def test_missing_imagenet_weights_offline_name_the_file_and_where_it_goes(photos, write_config, tmp_path, monkeypatch):
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    text = config_text(photos, CACHED_BACKBONE.replace("WEIGHTS", "imagenet"), fine_tune="").replace("[32, 32", "[96, 96")
    result = check(write_config, text)
    assert_one_line_error(result, "", exact=False)
    line = result.output.strip()
    assert line.startswith(f"Error: {tmp_path / 'config.yaml'}: model.backbone.weights: ImageNet weights of MobileNetV2 not found: "
                           f"{home / 'models' / CACHED_NAME} is missing, and the download is skipped because CNNLAB_OFFLINE is set. "
                           f"To get them: put {CACHED_NAME} (from https://storage.googleapis.com/"), line
    assert f"in {home / 'models'}, or set model.backbone.weights to a weights file, or to null for random weights" in line


def test_a_missing_weights_file_is_one_line(photos, write_config, tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    result = check(write_config, config_text(photos, f"{{name: MobileNet, alpha: 0.25, weights: {missing}}}", fine_tune=""))
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: model.backbone.weights: file not found: {missing}; expected imagenet")


# ---------------------------------------------------------------- training


def test_a_backbone_with_random_weights_trains_and_its_run_evaluates_and_predicts(photos, tmp_path):
    text = config_text(photos, "{name: MobileNetV3Small, weights: null, alpha: 0.75, minimalistic: true, pooling: avg}",
                       epochs=1, fine_tune="")
    result = train(tmp_path, text)
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    assert runs.read_status(run_dir).state == "completed"
    assert json.loads((run_dir / "preprocessing.json").read_text())["rescale"] == 1.0  # pixels 0..255 into the model

    evaluated = run_cli("evaluate", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert "Accuracy:" in evaluated.output
    image = sorted(photos.glob("dogs/*.png"))[0]
    predicted = run_cli("predict", image, "--run", run_dir)
    assert predicted.exit_code == 0, predicted.output
    assert f"{image}: " in predicted.output
