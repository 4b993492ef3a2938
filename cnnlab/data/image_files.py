"""Image files as cnnlab reads them outside a training set: found in folders, decoded safely, brought to a run's images.

`predict`, `visualize` and `evaluate --data` read the user's files here: Pillow held to the
formats Keras' loader reads, the pixel count checked from the header before anything is
decoded (a decompression bomb is refused, not allocated), 16-bit grayscale scaled to 8
bits, then the run's colour mode, stored size and polarity. One walker (`walk_images`)
finds images in folders for training and prediction alike.
"""

import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data.pixels import background_brightness, to_color_mode
from cnnlab.errors import one_line

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' directory loader reads
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what Keras' image loader reads; Pillow is held to these decoders
FORMAT_NAMES = "PNG, JPEG, BMP or GIF"
DEFAULT_MAX_PIXELS = 50_000_000  # a 7000x7000 photo passes; a decompression bomb claims far more
INVERT_CHOICES = ("auto", "yes", "no")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error)  # how Pillow reports bad files
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}


@dataclass(frozen=True)
class ImageProblem:
    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


class BadImage(Exception):
    """One image cannot be predicted; becomes an ImageProblem and the others go on."""


def walk_images(folder):
    """The image files under `folder`, at any depth, in the order Keras' directory loader reads them.

    The one walker of cnnlab: training's image folders, `predict` and `evaluate --data` on a
    folder all see the same files. Keras' rule (keras.utils.image_dataset_from_directory):
    folders walked in sorted order of their path, files sorted within each, every file whose
    name ends in an image extension, hidden or not. A listing error is raised as OSError.
    """
    def fail(error):
        raise error

    for root, _, files in sorted(os.walk(folder, onerror=fail), key=lambda entry: entry[0]):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                yield Path(root) / name


def class_folders(folder):
    """The class sub-folders of an image folder, as Keras finds them: sorted, hidden ones (.git, .ipynb_checkpoints) skipped."""
    return [p for p in sorted(Path(folder).iterdir()) if p.is_dir() and not p.name.startswith(".")]


def collect_images(paths):
    """Files as given (whatever their extension) and, for folders, the image files under them (`walk_images`)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                found = list(walk_images(path))
            except OSError as exc:
                yield ImageProblem(str(raw), f"cannot list this folder: {exc.strerror or exc}")
                continue
            if not found:
                yield ImageProblem(str(raw), f"no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            yield from found
        elif not path.exists():
            yield ImageProblem(str(raw), "not found")
        else:
            yield path


class ImageReader:
    """Brings image files to what the run's training images were before preprocessing: colour mode, size, polarity.

    `spec`: the run's ImageSpec (cnnlab.data.images.run_image_spec), or the one an export.json recorded.
    """

    def __init__(self, spec, invert, max_pixels):
        self.shape = spec.shape
        self.color_mode = spec.color_mode
        self.antialias = spec.antialias
        self.invert = invert
        self.background = spec.background if invert == "auto" else None
        self.max_pixels = max_pixels

    def read(self, path):
        """(path, uint8 pixels at the stored shape, why inverted or None), or an ImageProblem."""
        try:
            pixels = to_color_mode(decode_image(path, self.max_pixels)[np.newaxis], self.color_mode)[0]
            pixels = resize_to(pixels, self.shape[:2], self.antialias)
            if pixels.shape != self.shape:
                raise BadImage(f"cannot be brought to the model's input: it becomes {list(pixels.shape)} in {self.color_mode}, "
                               f"the run's images are {list(self.shape)}")
        except BadImage as exc:
            return ImageProblem(str(path), str(exc))
        reason = invert_reason(self.invert, self.background, pixels)
        return str(path), (255 - pixels if reason else pixels), reason


def decode_image(path, max_pixels):
    """One PNG/JPEG/BMP/GIF file as uint8 (H, W, 1 or 3); the pixel count is checked from the header, before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise BadImage(f"empty file (0 bytes); expected a {FORMAT_NAMES} image")
    except OSError as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from None
    kind = None
    try:
        with pixel_limit_of_our_own(), Image.open(path, formats=IMAGE_FORMATS) as image:
            kind = image.format
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"{width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
                               "(--max-pixels); not decoded")
            image.load()
            return to_array(image)
    except (FileNotFoundError, PermissionError) as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from None
    except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
        kind = kind or format_by_signature(path)  # Pillow cannot tell a cut-off header from another kind of file
        if kind is None:
            raise BadImage(f"not a {FORMAT_NAMES} image") from None
        detail = "Pillow cannot read its header" if isinstance(exc, UnidentifiedImageError) else one_line(exc)
        raise BadImage(f"cannot decode this {kind} file (truncated or corrupt): {detail}") from None


@contextmanager
def pixel_limit_of_our_own():
    """Turns Pillow's own decompression-bomb check off while a header is read, because --max-pixels replaces it.

    Pillow would refuse above about 179 million pixels with a message of its own, whatever
    --max-pixels says; our check runs on the same header before any pixel is decoded.
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def format_by_signature(path):
    """The format a file's first bytes announce, or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((name for magic, name in SIGNATURES.items() if head.startswith(magic)), None)


def to_array(image):
    """uint8 (H, W, 1) for grayscale pictures, (H, W, 3) for every other mode; 16-bit grayscale scaled to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64) / 257  # 65535 -> 255
        return np.clip(np.round(pixels), 0, 255).astype(np.uint8)[..., np.newaxis]
    if image.mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"))[..., np.newaxis]
    return np.asarray(image.convert("RGB"))


def resize_to(pixels, size, antialias):
    """Bilinear resize of one uint8 image to `size`, rounded back to uint8 as the image-folder loader does."""
    if pixels.shape[:2] == tuple(size):
        return pixels
    from keras import ops

    resized = ops.image.resize(pixels.astype(np.float32), tuple(size), interpolation="bilinear", antialias=antialias)
    return np.clip(np.round(ops.convert_to_numpy(resized)), 0, 255).astype(np.uint8)


def invert_reason(mode, training, pixels):
    """Why this image is inverted, or None.

    The rule for `--invert auto`: the background of an image is the median brightness of
    its border (the outer eighth on each side, at least one pixel, at the stored size);
    it is light above 127.5 of 255. An image is inverted when its background is light
    and the run's training images have a dark one (digits, MNIST, Fashion-MNIST: light
    strokes on black), or the other way round. Where the training background is not known
    (image-folder runs: photographs have no single convention) nothing is inverted.
    """
    if mode == "yes":
        return "--invert yes"
    if mode == "no" or training is None:
        return None
    light = background_brightness(pixels[np.newaxis])[0] > 127.5
    if light == (training == "light"):
        return None
    return f"{'light' if light else 'dark'} background, unlike the run's training images"
