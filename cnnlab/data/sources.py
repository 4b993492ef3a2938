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
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnnlab.data.arrays import DataSplits, SourceArrays, check_label_range, check_same_image_shape, labelled_images
from cnnlab.data.image_folders import load_image_folder
from cnnlab.data.npz_files import load_npz_source, read_npz_arrays
from cnnlab.data.pixels import to_color_mode
from cnnlab.errors import DataError, one_line, short_repr


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


SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")  # where Debian's dataset-* packages install


DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts 0..16


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


def load_dataset(data, validation_split, seed, fold=None):
    """Loads `data` and splits it into train, validation and (when there is one) test.

    A source without an official test split gives `data.test_split` of its samples to test
    first; validation is then taken from what remains. Both splits use the same seed, so the
    same config and seed always give the same samples on each side. A source that brings its
    own validation split (an .npz with x_val, y_val) keeps it and `validation_split` does not
    apply, as Keras' `validation_data` overrides `validation_split`.

    With a `fold` (train.fold, `cnnlab cv`), validation is that fold of the training pool instead:
    everything but the test split, a source's own validation split included (`fold_positions`).
    """
    source = load_arrays(data)
    x, y, x_test, y_test = source.x_train, source.y_train, source.x_test, source.y_test
    try:
        if x_test is None and data.test_split > 0:
            x, y, x_test, y_test = split_train_val(x, y, data.test_split, seed)
        if fold is not None:
            x, y = pooled(x, y, source.x_val, source.y_val)
            kept, held = fold_positions(y, fold, seed)
            x_train, y_train, x_val, y_val = x[kept], y[kept], x[held], y[held]
        elif source.x_val is None:
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


def training_pool(data, seed):
    """(images, labels, description): the pool `train.fold` splits, in the order `fold_positions` numbers it."""
    source = load_arrays(data)
    x, y = source.x_train, source.y_train
    try:
        if source.x_test is None and data.test_split > 0:
            x, y, _, _ = split_train_val(x, y, data.test_split, seed)
    except DataError as exc:
        raise DataError(f"{source.description}: {exc}") from exc
    return (*pooled(x, y, source.x_val, source.y_val), source.description)


def pooled(x, y, x_val, y_val):
    """The training pool k-fold splits: the training images and, where the source brings one, its validation split."""
    if x_val is None:
        return x, y
    return np.concatenate([x, x_val]), np.concatenate([y, y_val])


def fold_positions(y, fold, seed):
    """(kept, held): the positions in the pool `y` that train and validate fold `fold.index` (1-based) of `fold.of`.

    scikit-learn's StratifiedKFold, shuffled with the run's seed: the folds of one seed are
    disjoint, cover the pool once, and hold each class in proportion, so their out-of-fold
    predictions score every pool image exactly once. The split depends only on the labels and
    the seed, so image-folder file names can be split the same way (held_out.py).
    """
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=fold.of, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():  # a class with fewer images than folds is missing from some folds; still valid
            warnings.filterwarnings("ignore", message="The least populated class")
            kept, held = list(splitter.split(np.zeros(len(y)), y))[fold.index - 1]
    except ValueError as exc:
        raise DataError(f"train.fold: cannot split {len(y)} samples into {fold.of} folds: {one_line(exc)}") from exc
    return kept, held


def load_digits_arrays(data):
    """scikit-learn's bundled 8x8 digits, stretched from 0..16 to 0..255 so they look like every other source."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * 255 / DIGITS_MAX_VALUE).astype(np.uint8)[..., np.newaxis]
    y = digits.target.astype(np.int32)
    return SourceArrays(x, y, None, None, DIGIT_CLASSES, f"digits: scikit-learn's bundled load_digits() ({len(y)} images, 8x8)")


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
