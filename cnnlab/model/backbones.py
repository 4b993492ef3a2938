"""keras.applications backbones for transfer learning: where their weights come from, and their preprocessing as layers.

The backbone itself is built in builder.py (the stage between the input and
`model.layers`); this module answers the two questions around it:

- Weights: `imagenet` is the file Keras would download, looked for first in Keras' own
  cache (`$KERAS_HOME/models/`, else `~/.keras/models/`) and loaded from there without
  the network; offline (CNNLAB_OFFLINE) and absent, one line names the exact file and the
  folder to put it in. A file path is loaded as it is; `null` keeps the random weights.
- Preprocessing: each family's `preprocess_input` is a map of each pixel's RGB values
  alone, an affine one (a scale and shift per channel, and for the caffe-style families a
  swap of R and B). It is measured from the family's own function, checked against it, and
  rebuilt as a Keras layer that saves and loads without custom code, so that the saved
  model takes pixels 0..255 and `evaluate`, `predict` and an export cannot forget it.
"""

import importlib
from pathlib import Path

import numpy as np

from cnnlab.data.sources import keras_home, offline
from cnnlab.errors import ConfigError, one_line, suggest

IMAGENET = "imagenet"
WEIGHTS_PATH = "model.backbone.weights"
PIXEL_MAX = 255.0
AFFINE_TOLERANCE = 1e-3  # on outputs of order 1 to 100: float32 arithmetic inside preprocess_input stays far below


def family(constructor):
    """The keras.applications module of a constructor: MobileNetV2 → mobilenet_v2, ResNet50 → resnet."""
    return constructor.__module__.rsplit(".", 1)[-1]


def preprocess_input_map(constructor):
    """The family's `preprocess_input` as (matrix, offset), such that it maps a pixel p (RGB, 0..255) to p @ matrix + offset.

    Read off the function at black and at full red, green and blue, in float64, then
    checked on random pixels: a family whose function is not such a map is refused.
    """
    preprocess_input = importlib.import_module(f"keras.applications.{family(constructor)}").preprocess_input

    def apply(pixels):
        return np.asarray(preprocess_input(pixels.copy()), dtype=np.float64)  # copy: it may work in place

    offset = apply(np.zeros((1, 1, 1, 3)))[0, 0, 0]
    matrix = np.stack([apply(PIXEL_MAX * np.eye(3)[i].reshape(1, 1, 1, 3))[0, 0, 0] - offset for i in range(3)]) / PIXEL_MAX
    probe = np.random.default_rng(0).uniform(0, PIXEL_MAX, size=(2, 4, 4, 3))
    if not np.allclose(apply(probe), probe @ matrix + offset, atol=AFFINE_TOLERANCE):
        raise ConfigError("model.backbone.name", f"keras.applications.{family(constructor)}.preprocess_input is not a map of each "
                          "pixel's colour alone, which cnnlab can build into the model; choose another backbone")
    return matrix, offset


def apply_preprocess_input(x, constructor):
    """`x` (pixels 0..255) through the family's preprocess_input, as Keras layers that serialise as themselves.

    Families that preprocess inside their own model (MobileNetV3, EfficientNet(V2),
    ConvNeXt: their `preprocess_input` passes pixels through) get no layer here.
    """
    import keras

    matrix, offset = preprocess_input_map(constructor)
    name = f"{family(constructor)}_preprocess_input"
    if np.allclose(matrix, np.eye(3)) and np.allclose(offset, 0):
        return x
    scale = np.diag(matrix)
    if np.allclose(matrix, np.diag(scale)):  # a scale and a shift per channel ("tf" and "torch" modes)
        return keras.layers.Rescaling(scale=same_or_list(scale), offset=same_or_list(offset), name=name)(x)
    # channels swapped as well ("caffe" mode: RGB → BGR minus the ImageNet mean): a fixed linear map of each pixel
    layer = keras.layers.Dense(3, trainable=False, name=name)
    x = layer(x)
    layer.set_weights([matrix.astype("float32"), offset.astype("float32")])
    return x


def same_or_list(values):
    """One number where every channel has the same, so the layer's config reads as Keras' own (Rescaling(1/127.5, offset=-1))."""
    return float(values[0]) if np.allclose(values, values[0]) else [float(v) for v in values]


def weights_argument(backbone):
    """What the constructor's `weights` gets: imagenet (answered by CachedWeights), None, or an existing file."""
    weights = backbone.weights
    if weights is None or weights == IMAGENET:
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(WEIGHTS_PATH, f"file not found: {path}{suggest(weights, [IMAGENET])}; expected {IMAGENET} (Keras' ImageNet "
                          f"weights), null (random weights) or the path of a weights file of {backbone.name} without its top")
    return str(path)


class CachedWeights:
    """Answers keras.applications' request for its ImageNet weights file (see keras_compat.applications_get_file).

    The file in Keras' cache is used as it is, without the network (Keras itself would
    check a published hash and download again on a mismatch; here a file that does not fit
    the backbone is refused when it loads). Without it: offline, one line naming the file
    and the folder it belongs in; else Keras downloads it into that folder.
    """

    def __init__(self, backbone_name):
        self.backbone_name = backbone_name
        self.file = None  # the file handed to Keras, once it has asked

    def __call__(self, original, fname, origin, cache_subdir="datasets", **kwargs):
        folder = keras_home() / cache_subdir
        path = folder / fname
        how = (f"put {fname} (from {origin}) in {folder}, or set {WEIGHTS_PATH} to a weights file, or to null for random weights")
        if not path.is_file():
            if offline():
                raise ConfigError(WEIGHTS_PATH, f"ImageNet weights of {self.backbone_name} not found: {path} is missing, and the "
                                  f"download is skipped because CNNLAB_OFFLINE is set. To get them: {how}")
            try:
                original(fname, origin, cache_subdir=cache_subdir, cache_dir=str(keras_home()), **kwargs)
            except Exception as exc:  # network, disk and hash failures all come as different types
                raise ConfigError(WEIGHTS_PATH, f"ImageNet weights of {self.backbone_name}: download of {origin} failed: "
                                  f"{one_line(exc)}. To get them: {how}") from exc
        self.file = path
        return str(path)


def error_path(backbone, message):
    """The config path a keras.applications constructor's error is about: an argument it names, the input shape, or the weights."""
    words = set(message.replace("`", " ").replace("=", " ").replace(",", " ").split())
    named = [key for key in backbone.kwargs if key in words]
    if len(named) == 1:
        return f"model.backbone.{named[0]}"
    lowered = message.lower()
    if "input_shape" in lowered or "input size" in lowered:
        return "model.input_shape"
    return "model.backbone"
