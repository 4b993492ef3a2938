"""Datasets as in-memory uint8 arrays: named datasets (digits, MNIST, Fashion-MNIST) and user data.

Everything here returns raw pixels (uint8, NHWC) and int32 labels; resizing, padding and
rescaling belong to the preprocessing step, so the same arrays serve training, evaluation
and plots. TensorFlow, Keras and scikit-learn are imported inside the functions that need
them, so that importing this module (and starting the CLI) stays fast.

Every expected failure is a `DataError` whose one-line message names the file or folder
and what was expected there.
"""

import gzip
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from cnnlab.data.image_files import IMAGE_EXTENSIONS, class_folders, walk_images
from cnnlab.data.pixels import to_color_mode
from cnnlab.errors import DataError, first_line, one_line, short_repr

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))

# The four files of the MNIST family, by the array they hold; each may be gzipped or not.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK"  # every .npz is a zip archive

SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages install
DEFAULT_IMAGE_SIZE = (256, 256)  # Keras' own default for image_dataset_from_directory
DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts 0..16
NPZ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, zipfile.BadZipFile, zlib.error)
READ_BATCH = 256


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy fields with == would be ambiguous
class DataSplits:
    x_train: np.ndarray  # uint8, (N, H, W, C); C = 1 for grayscale, 3 for rgb
    y_train: np.ndarray  # int32, (N,)
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: Optional[np.ndarray]  # None when there is no test split and data.test_split == 0
    y_test: Optional[np.ndarray]
    class_names: tuple  # of str
    description: str  # one line for people


@dataclass(frozen=True, eq=False)
class SourceArrays:
    """A source as read, before cnnlab splits anything: the splits the source itself brings.

    x_val and x_test are None where the source has no such split of its own; only a user's
    .npz can bring a validation split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    class_names: tuple
    description: str
    x_val: Optional[np.ndarray] = None
    y_val: Optional[np.ndarray] = None

    def all_images(self):
        """Every labelled image of the source, as (images, labels): for scoring data no run trained on."""
        parts = [(self.x_train, self.y_train), (self.x_val, self.y_val), (self.x_test, self.y_test)]
        present = [(x, y) for x, y in parts if x is not None]
        return np.concatenate([x for x, _ in present]), np.concatenate([y for _, y in present])


@dataclass(frozen=True)
class NamedDataset:
    """Where one MNIST-family dataset may already lie on disk, and how a person gets it when it does not."""

    name: str
    keras_cache_entry: str  # under <keras home>/datasets/: a folder of IDX files or a Keras .npz
    system_folder: str  # under SYSTEM_DATASETS_DIR
    class_names: tuple
    how_to_get: str


NAMED_DATASETS = {
    "fashion_mnist": NamedDataset(
        name="fashion_mnist",
        keras_cache_entry="fashion-mnist",
        system_folder="fashion-mnist",
        class_names=FASHION_MNIST_CLASSES,
        how_to_get="apt-get install dataset-fashion-mnist, or set data.path to a folder of the four IDX files or a Keras-style .npz",
    ),
    "mnist": NamedDataset(
        name="mnist",
        keras_cache_entry="mnist.npz",
        system_folder="mnist",
        class_names=DIGIT_CLASSES,
        how_to_get="put mnist.npz in ~/.keras/datasets, or set data.path to a folder of the four IDX files or a Keras-style .npz",
    ),
}


# ---------------------------------------------------------------- public interface


def load_dataset(data, validation_split, seed):
    """Loads `data` and splits it into train, validation and (when there is one) test.

    A source without an official test split gives `data.test_split` of its samples to test
    first; validation is then taken from what remains. Both splits use the same seed, so the
    same config and seed always give the same samples on each side. A source that brings its
    own validation split (an .npz with x_val, y_val) keeps it and `validation_split` does not
    apply, as Keras' `validation_data` overrides `validation_split`.
    """
    source = load_arrays(data)
    x, y, x_test, y_test = source.x_train, source.y_train, source.x_test, source.y_test
    try:
        if x_test is None and data.test_split > 0:
            x, y, x_test, y_test = split_train_val(x, y, data.test_split, seed)
        if source.x_val is None:
            x_train, y_train, x_val, y_val = split_train_val(x, y, validation_split, seed)
        else:
            x_train, y_train, x_val, y_val = x, y, source.x_val, source.y_val
    except DataError as exc:
        raise DataError(f"{source.description}: {exc}") from exc
    return DataSplits(x_train, y_train, x_val, y_val, x_test, y_test, source.class_names, source.description)


def load_arrays(data):
    """Reads the source in `data` before any splitting, in `data.color_mode`, as `SourceArrays`."""
    loaders = {
        "digits": load_digits_arrays,
        "fashion_mnist": load_named_arrays,
        "mnist": load_named_arrays,
        "image_folder": load_image_folder,
        "npz": load_npz_source,
    }
    if data.source not in loaders:
        raise DataError(f"data.source: expected one of {', '.join(loaders)}, received {short_repr(data.source)}")
    source = loaders[data.source](data)

    def in_mode(x):
        return None if x is None else to_color_mode(x, data.color_mode)

    return replace(source, x_train=in_mode(source.x_train), x_val=in_mode(source.x_val), x_test=in_mode(source.x_test),
                   class_names=tuple(source.class_names))


def split_train_val(x, y, fraction, seed):
    """Holds out `fraction` of (x, y), stratified by label so every class shows up on both sides.

    Returns (x_kept, y_kept, x_held_out, y_held_out). Seeded, so the same inputs always split
    the same way. Falls back to an unstratified split where scikit-learn cannot stratify (a
    class with a single sample, or fewer held-out samples than classes).
    """
    if fraction <= 0:
        return x, y, x[:0], y[:0]
    from sklearn.model_selection import train_test_split

    try:
        x_a, x_b, y_a, y_b = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:
        try:
            x_a, x_b, y_a, y_b = train_test_split(x, y, test_size=fraction, random_state=seed)
        except ValueError as exc:
            raise DataError(f"cannot hold out {fraction:g} of {len(y)} samples: {one_line(exc)}") from exc
    return x_a, y_a, x_b, y_b


# ---------------------------------------------------------------- digits


def load_digits_arrays(data):
    """scikit-learn's bundled 8x8 digits, stretched from 0..16 to 0..255 so they look like every other source."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * 255 / DIGITS_MAX_VALUE).astype(np.uint8)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    return SourceArrays(x, y, None, None, DIGIT_CLASSES, f"digits: scikit-learn's bundled load_digits() ({len(y)} images, 8x8)")


# ---------------------------------------------------------------- MNIST and Fashion-MNIST


def load_named_arrays(data):
    """Finds MNIST or Fashion-MNIST: data.path, then Keras' cache, then the system folder, then a download.

    A data.path that is set is the only place used: silently falling back to another copy
    would train on data the user did not ask for.
    """
    dataset = NAMED_DATASETS[data.source]
    if data.path is not None:
        return read_named_from_path(dataset, Path(data.path).expanduser())
    looked = []
    for place in candidate_places(dataset):
        found = read_named_if_present(dataset, place)
        if found is not None:
            return found
        looked.append(str(place))
    return download_named(dataset, looked)


def candidate_places(dataset):
    """Where a copy may already be, in the order they are tried."""
    return [keras_home() / "datasets" / dataset.keras_cache_entry, SYSTEM_DATASETS_DIR / dataset.system_folder]


def keras_home():
    """Keras' own rule: $KERAS_HOME, else ~/.keras."""
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()


def offline():
    """Tests and air-gapped machines set CNNLAB_OFFLINE so that nothing tries the network."""
    return bool(os.environ.get("CNNLAB_OFFLINE"))


def read_named_from_path(dataset, path):
    """data.path given explicitly: a folder of IDX files or a Keras-style .npz, nothing else."""
    expected = f"a folder holding {', '.join(IDX_FILES.values())} (optionally .gz) or a Keras-style .npz with x_train, y_train, x_test, y_test"
    if not path.exists():
        raise DataError(f"data.path {path}: not found; expected {expected}")
    found = read_named_if_present(dataset, path)
    if found is None:
        missing = ", ".join(name for name in IDX_FILES.values() if find_idx_file(path, name) is None)
        raise DataError(f"data.path {path}: missing {missing}; expected {expected}")
    return found


def read_named_if_present(dataset, place):
    """The dataset read from `place`, or None where `place` does not hold a complete copy."""
    if place.is_file():
        arrays = read_npz_arrays(place, required=tuple(IDX_FILES), optional=())
        where = {key: f"{place}: {key}" for key in IDX_FILES}
        return finish_named(dataset, arrays, where, f"{dataset.name}: {place}")
    if not place.is_dir():
        return None
    paths = {key: find_idx_file(place, name) for key, name in IDX_FILES.items()}
    if any(p is None for p in paths.values()):
        return None
    arrays = {
        "x_train": read_idx(paths["x_train"], IDX_IMAGES_MAGIC),
        "y_train": read_idx(paths["y_train"], IDX_LABELS_MAGIC),
        "x_test": read_idx(paths["x_test"], IDX_IMAGES_MAGIC),
        "y_test": read_idx(paths["y_test"], IDX_LABELS_MAGIC),
    }
    where = {key: str(path) for key, path in paths.items()}
    return finish_named(dataset, arrays, where, f"{dataset.name}: IDX files in {place}")


def finish_named(dataset, arrays, where, description):
    """Checks shapes, pairs and label range, whatever file format the arrays came from.

    `where` maps each array's key to the words naming it in errors: its IDX file, or `file.npz: key`.
    """
    x_train, y_train, _ = labelled_images(arrays["x_train"], arrays["y_train"], where["x_train"], where["y_train"])
    x_test, y_test, _ = labelled_images(arrays["x_test"], arrays["y_test"], where["x_test"], where["y_test"])
    check_same_image_shape(x_train, x_test, where["x_test"])
    check_label_range(y_train, dataset.class_names, where["y_train"])
    check_label_range(y_test, dataset.class_names, where["y_test"])
    return SourceArrays(x_train, y_train, x_test, y_test, dataset.class_names, description)


def download_named(dataset, looked):
    """Last resort: Keras' downloader, which also leaves a copy in the Keras cache for next time."""
    places = ", ".join(looked)
    if offline():
        raise DataError(f"{dataset.name} not found; looked in {places}; download skipped because CNNLAB_OFFLINE is set. To get it: {dataset.how_to_get}")
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, dataset.name).load_data()
    except Exception as exc:  # network, disk and hash failures all come as different types
        raise DataError(f"{dataset.name} not found; looked in {places}; download with keras.datasets.{dataset.name}.load_data() failed: {one_line(exc)}. To get it: {dataset.how_to_get}") from exc
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    where = {key: f"keras.datasets.{dataset.name} download: {key}" for key in IDX_FILES}
    return finish_named(dataset, arrays, where, f"{dataset.name}: downloaded by keras.datasets.{dataset.name} into {keras_home() / 'datasets'}")


def find_idx_file(folder, stem):
    """`stem.gz` (how they are distributed) or plain `stem` (after gunzip), or None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path, magic):
    """Parses one IDX file (gzipped or not): big-endian magic number, one uint32 per dimension, then bytes."""
    what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
    raw = read_maybe_gzipped(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, expected at least a {header}-byte header of IDX {what}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: expected an IDX {what} file (magic number 0x{magic:08X}), found magic number 0x{found:08X}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataError(f"{path}: truncated or corrupt IDX file: the header announces shape {dims} ({expected} bytes) but {len(raw) - header} bytes follow it")
    # copy: frombuffer over bytes is read-only, which would surprise any in-place preprocessing later
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_maybe_gzipped(path):
    """File bytes, gunzipped when the content is gzip whatever the file name says."""
    try:
        raw = Path(path).read_bytes()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read this IDX file (expected gzip-compressed or raw IDX data): {one_line(exc)}") from exc


# ---------------------------------------------------------------- image folders


def load_image_folder(data):
    """A folder of class sub-folders, read at data.image_size (default 256x256) in data.color_mode.

    Under TensorFlow by Keras' own loader (tf.data); on JAX and PyTorch, which that loader
    does not serve, by Pillow and the same bilinear resize (`read_image_folder_with_pillow`).
    """
    folder = Path(data.path).expanduser()
    check_image_folder(folder)
    image_size = tuple(data.image_size or DEFAULT_IMAGE_SIZE)
    from cnnlab.runtime import backend

    if not backend.is_tensorflow():
        return read_image_folder_with_pillow(folder, image_size, data.color_mode)
    try:
        import keras

        dataset = keras.utils.image_dataset_from_directory(
            str(folder),
            labels="inferred",
            label_mode="int",
            color_mode=data.color_mode,
            image_size=image_size,
            batch_size=None,
            shuffle=False,
            verbose=False,
        )
        class_names = tuple(dataset.class_names)
        xs, ys = [], []
        for images, labels in dataset.batch(READ_BATCH).as_numpy_iterator():
            xs.append(np.clip(np.round(images), 0, 255).astype(np.uint8))
            ys.append(labels.astype(np.int32))
    except Exception as exc:  # TensorFlow reports undecodable images with its own error types
        bad = find_undecodable_image(folder)
        if bad is not None:
            raise DataError(f"{bad}: cannot decode this image; expected a valid {', '.join(IMAGE_EXTENSIONS)} file") from exc
        raise DataError(f"{folder}: cannot read the images in this folder: {first_line(exc)}") from exc
    x, y = np.concatenate(xs), np.concatenate(ys)
    h, w = image_size
    description = f"image_folder: {len(y)} images in {len(class_names)} class folders under {folder}, loaded at {h}x{w}"
    return SourceArrays(x, y, None, None, class_names, description)


def read_image_folder_with_pillow(folder, image_size, color_mode):
    """What Keras' image_dataset_from_directory gives (class folders in sorted order, files sorted within each, every
    image resized bilinearly without antialiasing, no cropping), read with Pillow and keras.ops."""
    from keras import ops

    class_dirs = class_folders(folder)
    xs, ys = [], []
    for label, class_dir in enumerate(class_dirs):
        for path in walk_images(class_dir):
            pixels = decode_with_pillow(path, color_mode)
            if pixels is None:
                raise DataError(f"{path}: cannot decode this image; expected a valid {', '.join(IMAGE_EXTENSIONS)} file")
            if pixels.shape[:2] != image_size:
                resized = ops.image.resize(pixels.astype(np.float32), image_size, interpolation="bilinear", antialias=False)
                pixels = np.clip(np.round(ops.convert_to_numpy(resized)), 0, 255).astype(np.uint8)
            xs.append(pixels)
            ys.append(label)
    h, w = image_size
    class_names = tuple(d.name for d in class_dirs)
    description = f"image_folder: {len(ys)} images in {len(class_names)} class folders under {folder}, loaded at {h}x{w}"
    return SourceArrays(np.stack(xs), np.asarray(ys, dtype=np.int32), None, None, class_names, description)


def decode_with_pillow(path, color_mode):
    """uint8 (H, W, 1 or 3) pixels of one image file in `color_mode`, or None where Pillow cannot decode it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            pixels = np.asarray(image.convert("L" if color_mode == "grayscale" else "RGB"))
    except Exception:  # Pillow reports bad files with many error types; any of them means this file
        return None
    return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def check_image_folder(folder):
    """Says what is wrong with the folder before Keras does, in terms of the folder the user named."""
    expected = "a folder of class sub-folders holding images, e.g. cats/1.png, dogs/2.jpg"
    if not folder.exists():
        raise DataError(f"data.path {folder}: not found; expected {expected}")
    if not folder.is_dir():
        raise DataError(f"data.path {folder}: is not a folder; expected {expected}")
    try:
        class_dirs = class_folders(folder)
        count = sum(1 for d in class_dirs for _ in walk_images(d))
    except OSError as exc:
        raise DataError(f"data.path {folder}: cannot list this folder: {one_line(exc)}") from exc
    if not class_dirs:
        raise DataError(f"data.path {folder}: has no class sub-folders; expected {expected}")
    if count == 0:
        names = ", ".join(d.name for d in class_dirs[:5]) + (", ..." if len(class_dirs) > 5 else "")
        raise DataError(f"data.path {folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class sub-folders ({names})")


def find_undecodable_image(folder):
    """The first image file Pillow cannot decode, so the error can name it; TensorFlow's own message does not."""
    for class_dir in class_folders(folder):
        for path in walk_images(class_dir):
            if decode_with_pillow(path, "rgb") is None:
                return path
    return None


# ---------------------------------------------------------------- .npz files


def load_npz_source(data):
    """A user .npz: x_train, y_train, optionally x_val, y_val (its own validation split), x_test, y_test and class_names."""
    path = Path(data.path).expanduser()
    arrays = read_npz_arrays(path, required=("x_train", "y_train"), optional=("x_val", "y_val", "x_test", "y_test", "class_names"))
    x_train, y_train, width = npz_pair(arrays, path, "train")
    found = {"train": (x_train, y_train)}
    for split in ("val", "test"):
        if f"x_{split}" in arrays or f"y_{split}" in arrays:
            x, y, split_width = npz_pair(arrays, path, split)
            check_same_image_shape(x_train, x, f"{path}: x_{split}")
            found[split] = (x, y)
            width = max(width, split_width)
    labels = np.concatenate([y for _, y in found.values()])
    if "class_names" in arrays:
        class_names = as_class_names(arrays["class_names"], f"{path}: class_names")
        check_label_range(labels, class_names, f"{path}: labels")
    else:
        # one-hot labels know how many classes there are even when the last ones have no sample
        class_names = tuple(str(i) for i in range(max(int(labels.max()) + 1, width)))
    x_val, y_val = found.get("val", (None, None))
    x_test, y_test = found.get("test", (None, None))
    return SourceArrays(x_train, y_train, x_test, y_test, class_names, f"npz: {path}", x_val, y_val)


def npz_pair(arrays, path, split):
    """x_<split> and y_<split> checked as images and their labels: (images, int32 labels, one-hot width or 0)."""
    x_key, y_key = f"x_{split}", f"y_{split}"
    if (x_key in arrays) != (y_key in arrays):
        present, absent = (x_key, y_key) if x_key in arrays else (y_key, x_key)
        raise DataError(f"{path}: has {present} but no {absent}; expected both or neither")
    return labelled_images(arrays[x_key], arrays[y_key], f"{path}: {x_key}", f"{path}: {y_key}")


def read_npz_arrays(path, required, optional):
    """The named arrays of an .npz, without pickle: an .npz must not be able to run code."""
    expected = f"an .npz archive with {', '.join(required)}"
    check_is_zip(path, expected)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in required if key not in npz.files]
            if missing:
                raise DataError(f"{path}: missing {', '.join(missing)}; expected {expected}, found {', '.join(npz.files) or 'no arrays'}")
            return {key: npz[key] for key in required + tuple(optional) if key in npz.files}
    except NPZ_ERRORS as exc:
        raise DataError(f"{path}: cannot read as {expected} (object arrays are refused): {one_line(exc)}") from exc


def check_is_zip(path, expected):
    """np.load guesses the format from the first bytes and would try pickle on anything unknown; refuse early."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: not found; expected {expected}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {one_line(exc)}; expected {expected}") from exc
    if head[:2] != ZIP_MAGIC:
        raise DataError(f"{path}: is not an .npz (zip) archive; expected {expected}")


def as_class_names(names, where):
    names = np.asarray(names)
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise DataError(f"{where}: expected a 1-D array of strings, received dtype {names.dtype} shape {names.shape}")
    result = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist())
    if len(set(result)) != len(result):
        raise DataError(f"{where}: expected distinct names, received {', '.join(result)}")
    return result


# ---------------------------------------------------------------- array checks


def as_images(x, where):
    """(N, H, W) or (N, H, W, C) with C 1 or 3, as uint8 NHWC; floats in 0..1 are taken as scaled pixels."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{where}: expected images shaped (N, H, W) or (N, H, W, C) with C 1 or 3, received shape {x.shape}")
    if len(x) == 0 or x.size == 0:
        raise DataError(f"{where}: expected at least one image, received shape {x.shape}")
    return to_uint8(x, where)


def to_uint8(x, where):
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "iuf":
        raise DataError(f"{where}: expected uint8, integer or float pixels, received dtype {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataError(f"{where}: expected finite pixel values, found NaN or infinity")
    low, high = x.min(), x.max()
    if x.dtype.kind == "f" and low >= 0 and high <= 1.0:
        return np.round(x * 255.0).astype(np.uint8)
    if low < 0 or high > 255:
        raise DataError(f"{where}: expected pixel values in 0..255 (or floats in 0..1), found {low:g}..{high:g}")
    return np.round(x).astype(np.uint8) if x.dtype.kind == "f" else x.astype(np.uint8)


def as_labels(y, where):
    """Integer labels (N,) as int32, or one-hot (N, K) reduced by argmax. Returns (labels, K or 0)."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{where}: expected integer class labels, received dtype {y.dtype}")
    width = 0
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        width = y.shape[1]
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise DataError(f"{where}: expected labels shaped (N,) or one-hot (N, K), received shape {y.shape}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise DataError(f"{where}: expected whole-number class labels, found fractional, NaN or infinite values")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: expected class labels >= 0, found {y.min():g}")
    if len(y) and y.max() >= np.iinfo(np.int32).max:
        raise DataError(f"{where}: expected class labels that fit int32, found {y.max():g}")
    return y.astype(np.int32), width


def labelled_images(x, y, x_where, y_where):
    """Images and their labels checked as one pair, whatever file they came from: (uint8 NHWC, int32 labels, one-hot width or 0)."""
    x = as_images(x, x_where)
    y, width = as_labels(y, y_where)
    check_pair(x, y, x_where, y_where)
    return x, y, width


def check_pair(x, y, x_where, y_where):
    if len(x) != len(y):
        raise DataError(f"{y_where}: expected one label per image of {x_where} ({len(x)}), found {len(y)}")


def check_same_image_shape(x_train, x_test, where):
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{where}: expected images shaped like x_train {x_train.shape[1:]}, found {x_test.shape[1:]}")


def check_label_range(y, class_names, where):
    if len(y) and y.max() >= len(class_names):
        raise DataError(f"{where}: expected labels 0..{len(class_names) - 1} for {len(class_names)} classes, found {y.max()}")


# ---------------------------------------------------------------- messages
