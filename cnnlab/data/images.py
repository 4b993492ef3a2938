"""What a model's images look like before preprocessing: their stored shape, colour mode, how they were shrunk, their background.

`cnnlab predict` brings image files to this (for a run's best.keras and for an exported
model alike) and `cnnlab export` records it beside the files it writes, so the two never
disagree about it. A library module: predict, visualize and export all use it.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from cnnlab.data import sources as data
from cnnlab.data.pixels import background_brightness
from cnnlab.errors import DataError

# The bundled datasets are light strokes on black; a photo of ink on paper is the opposite.
KNOWN_BACKGROUNDS = {"digits": "dark", "mnist": "dark", "fashion_mnist": "dark"}
BACKGROUND_SAMPLE = 1000  # training images measured to find an .npz run's background


@dataclass(frozen=True)
class ImageSpec:
    """The uint8 images a model takes before its preprocessing, and how an image file is brought to them."""

    shape: tuple  # (height, width, channels): preprocessing.json image_shape
    color_mode: str  # grayscale | rgb
    antialias: bool  # how a larger image is shrunk to `shape` (bilinear either way)
    background: Optional[str]  # 'dark', 'light' or None (not known) for the training images


def run_image_spec(run, with_background=True):
    """The ImageSpec of a trained run; `with_background=False` skips measuring an .npz run's background."""
    return ImageSpec(
        shape=tuple(run.preprocessing["image_shape"]),
        color_mode=run.preprocessing["color_mode"],
        # An image-folder run's images were resized by Keras' loader (bilinear, no antialiasing): do the same.
        # Other sources were never resized, so shrink with antialiasing, which keeps thin strokes.
        antialias=run.config.data.source != "image_folder",
        background=training_background(run) if with_background else None,
    )


def training_background(run):
    """'dark', 'light' or None (not known) for the run's training images.

    Taken from preprocessing.json "background" when the run records one; known for the
    bundled datasets; measured on up to BACKGROUND_SAMPLE training images for an .npz run.
    """
    recorded = run.preprocessing.get("background")
    if recorded in ("dark", "light"):
        return recorded
    source = run.config.data.source
    if source in KNOWN_BACKGROUNDS:
        return KNOWN_BACKGROUNDS[source]
    if source != "npz":
        return None
    try:
        x_train = data.load_arrays(run.config.data).x_train
    except DataError:
        return None  # the .npz moved since training: say nothing rather than guess
    return "light" if np.median(background_brightness(x_train[:BACKGROUND_SAMPLE])) > 127.5 else "dark"
