"""Transfer learning: a keras.applications backbone (model.backbone) under a head, and fine-tuning (train.fine_tune).

No ImageNet weights here (no network): the backbones have random weights, or weights
that a test writes itself, under the exact file name Keras would download or at a path.
A random backbone's features all but vanish in inference mode (its BatchNormalization
statistics are 0 and 1), so the tests that train read a MobileNet whose statistics were
measured on the test photos: random convolutions whose features differ from photo to photo.
"""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from cnnlab.model import builder
from cnnlab.training import callbacks
from cnnlab.rundir import files as run_files, trained
from cnnlab.config.experiment import config_from_text, load_config
from cnnlab.errors import ConfigError
from conftest import CONFIGS, assert_one_line_error, run_cli, write_and_train
from test_resume_state import CtrlCAfter  # one Ctrl-C at a chosen epoch, for every resume test

SIZE = 32  # the smallest input keras.applications' MobileNets take
BACKBONE = dict(name="MobileNet", alpha=0.25, pooling="avg")  # 87 layers: the quickest keras.applications model to trace
FIRST_LR, FINE_TUNE_LR = 1.0e-3, 1.0e-5
UNFREEZE = 7  # MobileNet's top layers: conv_dw_13, conv_pw_13, each with its BatchNormalization and ReLU, and the pooling

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


def config_text(photos, backbone, epochs=2, fine_tune=f"  fine_tune: {{unfreeze: {UNFREEZE}, epochs: 2, learning_rate: 1.0e-5}}\n"):
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


@pytest.fixture(scope="module")
def backbone_file(photos, tmp_path_factory):
    """A MobileNet weights file: random convolutions, BatchNormalization statistics measured on the photos.

    With momentum 0, one pass in training mode sets each BatchNormalization layer's moving
    statistics to those of its input on the photos.
    """
    path = tmp_path_factory.mktemp("weights") / "mobilenet.weights.h5"
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg", alpha=0.25)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(keras.applications.mobilenet.preprocess_input(read_photos(photos)), training=True)
    model.save_weights(path)
    return path


class Record(keras.callbacks.Callback):
    """What each epoch left in the model: its trainable weights, and the backbone's top, bottom and a BatchNormalization layer."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        backbone = builder.find_backbone(self.model)
        self.epochs.append({
            "trainable": sorted(weight.path for weight in self.model.trainable_weights),
            **{name: [np.array(w) for w in backbone.get_layer(name).get_weights()] for name in ("conv1", "conv_pw_13", "conv_pw_13_bn")},
        })


def with_extra_callbacks(monkeypatch, *extra):
    make = callbacks.make_callbacks
    monkeypatch.setattr(callbacks, "make_callbacks", lambda *args: make(*args) + list(extra))


def only_run(root):
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def fine_tuned(photos, backbone_file, tmp_path_factory):
    """2 epochs on the frozen backbone, then 2 of fine-tuning its top layers; returns (run folder, Record)."""
    record = Record()
    root = tmp_path_factory.mktemp("fine_tuned")
    with pytest.MonkeyPatch.context() as patch:
        with_extra_callbacks(patch, record)
        result = write_and_train(root, config_text(photos, {**BACKBONE, "weights": str(backbone_file)}), check=False)
    assert result.exit_code == 0, result.output
    return only_run(root), record


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


@pytest.mark.parametrize("backbone, fine_tune, expected", [
    (None, "  fine_tune: {unfreeze: 7, epochs: 2, learning_rate: 1.0e-5}\n", "train.fine_tune: needs model.backbone"),
    ("{name: MobileNet, weights: null, trainable: true}", "  fine_tune: {unfreeze: 6, epochs: 2, learning_rate: 1.0e-5}\n",
     "train.fine_tune: needs model.backbone.trainable: false"),
    ("{name: MobileNet, weights: null}", "  fine_tune: {unfreeze: 6, epochs: 2}\n", "train.fine_tune: missing learning_rate"),
    ("{name: MobileNet, weights: null, alpha: 0.25, pooling: avg}", "  fine_tune: {unfreeze: 88, epochs: 2, learning_rate: 1.0e-5}\n",
     "train.fine_tune.unfreeze: MobileNet has 87 layers; expected at most 87, received 88"),
])
def test_fine_tune_is_checked_before_training(write_config, photos, backbone, fine_tune, expected):
    result = check(write_config, config_text(photos, backbone or "null", fine_tune=fine_tune))
    assert_one_line_error(result, "")
    assert f"config.yaml: {expected}" in result.output


# ---------------------------------------------------------------- preprocess_input inside the model


@pytest.mark.parametrize("name, layer", [
    ("MobileNetV2", "Rescaling"),  # "tf" mode: x / 127.5 - 1
    ("DenseNet121", "Rescaling"),  # "torch" mode: x / 255, minus ImageNet's mean, over its standard deviation, per channel
    ("ResNet50", "Dense"),  # "caffe" mode: RGB to BGR, minus ImageNet's mean
])
def test_the_familys_preprocess_input_is_a_layer_of_the_model(name, layer, tmp_path):
    import importlib

    from cnnlab.model import backbones

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
    from cnnlab.model import backbones

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


def test_a_cached_file_that_does_not_fit_the_backbone_is_one_line(photos, write_config, tmp_path, monkeypatch):
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    (home / "models").mkdir(parents=True)
    other = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.5, include_top=False, weights=None)  # alpha 0.5, not 0.35
    other.save(home / "models" / CACHED_NAME)
    text = config_text(photos, CACHED_BACKBONE.replace("WEIGHTS", "imagenet"), fine_tune="").replace("[32, 32", "[96, 96")
    result = check(write_config, text)
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: model.backbone.weights: cannot load {home / 'models' / CACHED_NAME} "
                                  "into MobileNetV2: Shape mismatch")


def test_a_missing_weights_file_is_one_line(photos, write_config, tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    result = check(write_config, config_text(photos, f"{{name: MobileNet, alpha: 0.25, weights: {missing}}}", fine_tune=""))
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: model.backbone.weights: file not found: {missing}; expected imagenet")


def test_the_shipped_config_builds_and_needs_the_imagenet_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = CONFIGS / "photos_mobilenet.yaml"
    result = run_cli("check", config, "--set", "model.backbone.weights=null")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"{config}: OK, 2,260,546 parameters")
    assert "Trainable params: 2,562" in result.output  # the head: the backbone is frozen
    result = run_cli("check", config)
    assert_one_line_error(result, f"{config}: model.backbone.weights: ImageNet weights of MobileNetV2 not found: "
                                  f"{tmp_path / 'models' / 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5'} is missing")


# ---------------------------------------------------------------- training


def test_a_backbone_with_random_weights_trains_and_its_run_evaluates_and_predicts(photos, tmp_path):
    text = config_text(photos, "{name: MobileNetV3Small, weights: null, alpha: 0.75, minimalistic: true, pooling: avg}",
                       epochs=1, fine_tune="")
    result = write_and_train(tmp_path, text, check=False)
    assert result.exit_code == 0, result.output
    run_dir = only_run(tmp_path)
    assert run_files.read_status(run_dir).state == "completed"
    assert json.loads((run_dir / "preprocessing.json").read_text())["rescale"] == 1.0  # pixels 0..255 into the model

    evaluated = run_cli("evaluate", run_dir)
    assert evaluated.exit_code == 0, evaluated.output
    assert "Accuracy:" in evaluated.output
    image = sorted(photos.glob("dogs/*.png"))[0]
    predicted = run_cli("predict", image, "--run", run_dir)
    assert predicted.exit_code == 0, predicted.output
    assert f"{image}: " in predicted.output


def test_a_trainable_backbone_trains_with_its_batch_normalization_in_training_mode(photos):
    config = config_from_text(config_text(photos, "{name: MobileNet, alpha: 0.25, pooling: avg, weights: null, trainable: true}", fine_tune=""))
    model = builder.validate(config)
    backbone = builder.find_backbone(model)
    assert len(model.trainable_weights) > 2  # the backbone's as well as the head's
    norm = backbone.get_layer("conv1_bn")
    before = np.array(norm.moving_mean)
    model.train_on_batch(read_photos(photos)[:8], np.arange(8) % 2)
    assert not np.array_equal(np.array(norm.moving_mean), before)


def test_only_a_first_phase_that_ended_as_planned_is_followed_by_fine_tuning(tmp_path):
    from cnnlab.training import fine_tune
    from cnnlab.training.callbacks import ResumedEarlyStopping

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    early_stopping = ResumedEarlyStopping([], tmp_path, monitor="val_loss", patience=1)
    early_stopping.set_model(model)
    early_stopping.on_train_begin()
    model.stop_training = False
    assert fine_tune.first_phase_ended(model, [early_stopping])  # its epochs ran out
    model.stop_training = True  # stopped by something else: TerminateOnNaN, a sweep's pruner
    assert not fine_tune.first_phase_ended(model, [early_stopping])
    early_stopping.on_epoch_end(0, {"val_loss": 1.0})
    early_stopping.on_epoch_end(1, {"val_loss": 2.0})  # no better for `patience` epochs: early stopping stops
    assert early_stopping.stopped_epoch == 1 and fine_tune.first_phase_ended(model, [early_stopping])


def test_fine_tuning_continues_the_history_at_the_lower_learning_rate(fine_tuned):
    run_dir, _ = fine_tuned
    history = run_files.read_history(run_dir / "history.csv")
    assert history["epoch"] == [1, 2, 3, 4]
    assert history["phase"] == [1, 1, 2, 2]
    np.testing.assert_allclose(history["learning_rate"], [FIRST_LR, FIRST_LR, FINE_TUNE_LR, FINE_TUNE_LR], rtol=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fine_tune_first_epoch"] == 3 and metrics["epochs_run"] == 4 and metrics["epochs_planned"] == 4
    assert run_files.read_status(run_dir).state == "completed"
    assert not (run_dir / run_files.BACKUP_DIR).exists() and not (run_dir / run_files.RESUME_DIR).exists()


def test_fine_tuning_trains_the_backbones_top_layers_and_keeps_batch_normalization_frozen(fine_tuned, backbone_file):
    _, record = fine_tuned
    head = ["dense/bias", "dense/kernel"]
    assert [epoch["trainable"] for epoch in record.epochs] == [head, head] + 2 * [sorted(head + ["conv_dw_13/kernel", "conv_pw_13/kernel"])]
    start = keras.applications.MobileNet(input_shape=(SIZE, SIZE, 3), include_top=False, weights=str(backbone_file), pooling="avg", alpha=0.25)

    def unchanged(name, epochs):
        return all(all(np.array_equal(a, b) for a, b in zip(record.epochs[e][name], start.get_layer(name).get_weights())) for e in epochs)

    assert unchanged("conv_pw_13", [0, 1])  # frozen in the first phase
    assert not unchanged("conv_pw_13", [2]) and not unchanged("conv_pw_13", [3])  # trained in the second
    assert unchanged("conv1", range(4))  # below the unfrozen top: frozen throughout
    assert unchanged("conv_pw_13_bn", range(4))  # gamma, beta and the moving statistics: inference mode, not trained


def test_the_saved_model_applies_preprocess_input_itself(fine_tuned, photos):
    run_dir, _ = fine_tuned
    model = trained.load_model(run_dir / run_files.MODEL)  # safe mode: the file needs no custom code
    pixels = read_photos(photos)[:4]
    preprocess = keras.Model(model.input, model.get_layer("mobilenet_preprocess_input").output)
    np.testing.assert_allclose(preprocess.predict(pixels, verbose=0), keras.applications.mobilenet.preprocess_input(pixels.copy()), atol=1e-5)
    assert load_config(run_dir / "config.yaml").model.backbone.trainable is False


class CtrlCWhenFineTuningBegins(keras.callbacks.Callback):
    """Ctrl-C as the second phase's training begins: its start saved, none of its epochs done."""

    calls = 0

    def on_train_begin(self, logs=None):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt


def comparable(run_dir):
    history = run_files.read_history(run_dir / run_files.HISTORY)
    history.pop("time_s")
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    return history, {key: metrics[key] for key in ("epochs_run", "best_epoch", "best", "test", "fine_tune_first_epoch")}


@pytest.mark.parametrize("interruption", [lambda: CtrlCAfter(2), CtrlCWhenFineTuningBegins, lambda: CtrlCAfter(3)],
                         ids=["after-the-first-phase", "as-fine-tuning-begins", "after-epoch-3"])
def test_a_fine_tuning_run_resumed_after_ctrl_c_ends_as_the_uninterrupted_run(fine_tuned, photos, backbone_file, tmp_path, monkeypatch,
                                                                              interruption):
    expected_history, expected_metrics = comparable(fine_tuned[0])
    with monkeypatch.context() as patch:
        with_extra_callbacks(patch, interruption())
        result = write_and_train(tmp_path, config_text(photos, {**BACKBONE, "weights": str(backbone_file)}), check=False)
    assert result.exit_code == 130, result.output
    run_dir = only_run(tmp_path)
    assert run_files.read_status(run_dir).state == "interrupted"
    resumed = run_cli("train", "--resume", run_dir, "-q")
    assert resumed.exit_code == 0, resumed.output

    history, metrics = comparable(run_dir)
    assert history.keys() == expected_history.keys()
    for key in expected_history:
        np.testing.assert_allclose(history[key], expected_history[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert json.dumps(metrics) == json.dumps(expected_metrics)
