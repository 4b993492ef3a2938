"""`cnnlab predict`: class probabilities for image files, from a run's best model or a model `cnnlab export` wrote.

Each image takes the path its training images took: decoded, brought to the run's
colour mode and stored image shape (preprocessing.json image_shape), then the run's
own resize/pad/scale from `cnnlab.preprocess` (an exported model does that inside
itself, so it gets the uint8 image). A problem with one image is reported for that
image and the others are still predicted, in batches.
"""

import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from cnnlab.data import sources as data
from cnnlab.rundir import listing
from cnnlab.errors import DataError, one_line, short_repr
from cnnlab.data.images import background_brightness, run_image_spec
from cnnlab.deploy.inference import ExportedModel, class_probabilities
from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what Keras' image loader reads; Pillow is held to these decoders
FORMAT_NAMES = "PNG, JPEG, BMP or GIF"
DEFAULT_MAX_PIXELS = 50_000_000  # a 7000x7000 photo passes; a decompression bomb claims far more
DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 64
INVERT_CHOICES = ("auto", "yes", "no")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error)  # how Pillow reports bad files
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP"}


@dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: np.ndarray  # one per class, in the run's class order
    inverted: Optional[str]  # why the image was inverted, or None

    def top(self, class_names, k):
        """The k most probable classes as (name, probability), most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(class_names[i], float(self.probabilities[i])) for i in order]


@dataclass(frozen=True)
class ImageProblem:
    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


class BadImage(Exception):
    """One image cannot be predicted; becomes an ImageProblem and the others go on."""


def choose_run(run_dir, runs_dir):
    """The run folder to use and how it was chosen: --run as given, else the newest completed run under `runs_dir`."""
    if run_dir is not None:
        return Path(run_dir), "given with --run"
    return listing.newest_completed_run(runs_dir), f"the newest completed run in {runs_dir}; --run RUN_DIR picks another"


def predict_images(run, paths, invert="auto", max_pixels=DEFAULT_MAX_PIXELS, batch_size=DEFAULT_BATCH_SIZE):
    """Yields a Prediction or an ImageProblem per image, in the order given; folders expand to their images.

    `run`: a TrainedRun (its best.keras) or an ExportedModel.
    """
    if invert not in INVERT_CHOICES:
        raise DataError(f"invert: expected one of {', '.join(INVERT_CHOICES)}, received {short_repr(invert)}")
    reader = ImageReader(run, invert, max_pixels)
    items = list(collect_images(paths))
    for start in range(0, len(items), batch_size):
        results = [item if isinstance(item, ImageProblem) else reader.read(item) for item in items[start:start + batch_size]]
        ready = [r for r in results if not isinstance(r, ImageProblem)]
        probabilities = iter(predict_batch(run, np.stack([pixels for _, pixels, _ in ready])) if ready else [])
        for r in results:
            yield r if isinstance(r, ImageProblem) else Prediction(r[0], next(probabilities), r[2])


def predict_batch(run, images):
    """uint8 images at the stored shape → probabilities, through the run's own preprocessing (an exported model's is inside it)."""
    if isinstance(run, ExportedModel):
        return run.predict(images)
    inputs = preprocess_images(images, preprocessing_from_record(run.preprocessing))
    return class_probabilities(run.model.predict_on_batch(inputs), len(run.class_names))


# ---------------------------------------------------------------- finding and reading images


def collect_images(paths):
    """Files as given (whatever their extension) and, for folders, the image files under them, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in data.IMAGE_EXTENSIONS
                               and not any(part.startswith(".") for part in p.relative_to(path).parts))
            except OSError as exc:
                yield ImageProblem(str(raw), f"cannot list this folder: {exc.strerror or exc}")
                continue
            if not found:
                yield ImageProblem(str(raw), f"no images ({', '.join(data.IMAGE_EXTENSIONS)}) in this folder")
            yield from found
        elif not path.exists():
            yield ImageProblem(str(raw), "not found")
        else:
            yield path


class ImageReader:
    """Brings image files to what the run's training images were before preprocessing: colour mode, size, polarity.

    `run`: a TrainedRun, or an ExportedModel, whose export.json recorded the same (cnnlab.data.images.ImageSpec).
    """

    def __init__(self, run, invert, max_pixels):
        spec = run.image_spec if isinstance(run, ExportedModel) else run_image_spec(run, with_background=invert == "auto")
        self.shape = spec.shape
        self.color_mode = spec.color_mode
        self.antialias = spec.antialias
        self.invert = invert
        self.background = spec.background if invert == "auto" else None
        self.max_pixels = max_pixels

    def read(self, path):
        """(path, uint8 pixels at the stored shape, why inverted or None), or an ImageProblem."""
        try:
            pixels = data.to_color_mode(decode_image(path, self.max_pixels)[np.newaxis], self.color_mode)[0]
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


# ---------------------------------------------------------------- light-on-dark or dark-on-light


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


# ---------------------------------------------------------------- output


def format_prediction(item, class_names, k):
    """`path: bag 0.998, sandal 0.001, ...`, saying when the image was inverted."""
    top = ", ".join(f"{name} {p:.3f}" for name, p in item.top(class_names, k))
    note = f" (inverted: {item.inverted})" if item.inverted else ""
    return f"{item.path}{note}: {top}"


def predictions_document(run_dir, chosen, items, class_names, k, model=None):
    """One JSON-ready document for scripts: the run (and the exported model, with --model), each image's top k, each problem."""
    source = {"model": str(model.path), "model_format": model.format} if model is not None else {}
    return {
        "run": str(run_dir),
        "run_chosen": chosen,
        **source,
        "top_k": k,
        "predictions": [{"path": item.path, "inverted": item.inverted is not None, "inverted_because": item.inverted,
                         "top": [{"class": name, "probability": p} for name, p in item.top(class_names, k)]}
                        for item in items if isinstance(item, Prediction)],
        "errors": [{"path": item.path, "error": item.message} for item in items if isinstance(item, ImageProblem)],
    }
