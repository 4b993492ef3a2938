"""The one preprocessing path from uint8 images to model inputs, shared by train, evaluate and predict.

Images stay uint8 in memory (a quarter of float32, an eighth of float64) and are
cast, resized, padded and scaled per batch, so the arithmetic that training saw is
exactly what evaluation and prediction repeat: it is defined by the run's resolved
`data` section and nothing else. `preprocess_images` is written in `keras.ops`, so the
one function serves every backend: inside TensorFlow's compiled loop and `tf.data`, and
in the `keras.utils.PyDataset` that feeds JAX and PyTorch.
"""

from dataclasses import dataclass
from typing import Optional

from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class Preprocessing:
    rescale: float
    image_size: Optional[tuple]  # resize to (height, width) first, when set
    pad_to: Optional[tuple]  # then zero-pad, centred, to (height, width), when set
    color_mode: str


def preprocessing_for(data_config):
    return Preprocessing(rescale=data_config.rescale, image_size=data_config.image_size,
                         pad_to=data_config.pad_to, color_mode=data_config.color_mode)


def preprocessing_record(prep, image_shape, input_shape):
    """What evaluate and predict need to repeat training's preprocessing on new images, as plain data."""
    return {
        "image_shape": list(image_shape),  # one stored image before preprocessing, e.g. [28, 28, 1]
        "color_mode": prep.color_mode,
        "image_size": list(prep.image_size) if prep.image_size else None,
        "pad_to": list(prep.pad_to) if prep.pad_to else None,
        "rescale": prep.rescale,
        "model_input_shape": list(input_shape),
    }


def preprocessing_from_record(record):
    return Preprocessing(rescale=record["rescale"], image_size=tuple(record["image_size"]) if record["image_size"] else None,
                         pad_to=tuple(record["pad_to"]) if record["pad_to"] else None, color_mode=record["color_mode"])


def output_shape(prep, image_shape):
    """Shape of one image after preprocessing, computed without TensorFlow."""
    height, width, channels = image_shape
    if prep.image_size:
        height, width = prep.image_size
    if prep.pad_to:
        if prep.pad_to[0] < height or prep.pad_to[1] < width:
            raise ConfigError("data.pad_to", f"{list(prep.pad_to)} is smaller than the images ({height}x{width}); padding cannot shrink them, use data.image_size")
        height, width = prep.pad_to
    return (height, width, channels)


def check_input_shape(prep, image_shape, input_shape):
    """The model's input must be what the data becomes, or training would fail deep inside Keras."""
    produced = output_shape(prep, image_shape)
    if tuple(input_shape) != produced and not (len(input_shape) == 2 and produced[2] == 1 and tuple(input_shape) == produced[:2]):
        raise ConfigError("model.input_shape", f"is {list(input_shape)} but the data gives images of shape {list(produced)} "
                          "after preprocessing; change model.input_shape, or data.image_size / data.pad_to / data.color_mode")


def preprocess_images(images, prep):
    """uint8 (N, H, W, C) images → float32 model input of the backend: resize (bilinear), pad (zeros, centred), scale.

    The padding is split as tf.image.resize_with_crop_or_pad splits it, the odd pixel
    at the bottom and right, so runs trained before this was written in keras.ops are
    preprocessed as they were.
    """
    from keras import ops

    x = ops.cast(images, "float32")
    if prep.image_size and tuple(x.shape[1:3]) != tuple(prep.image_size):
        x = ops.image.resize(x, tuple(prep.image_size), interpolation="bilinear", antialias=False)
    if prep.pad_to and tuple(x.shape[1:3]) != tuple(prep.pad_to):
        (height, width), (target_height, target_width) = x.shape[1:3], prep.pad_to
        top, left = (target_height - height) // 2, (target_width - width) // 2
        x = ops.pad(x, [[0, 0], [top, target_height - height - top], [left, target_width - width - left], [0, 0]])
    return x * prep.rescale
