"""A user's .npz file as uint8 arrays: Keras' mnist.npz layout (x_train, y_train, x_test, y_test) with optional
class names, checked before anything is trained on it.
"""

import zipfile
import zlib
from pathlib import Path

import numpy as np

from cnnlab.data.arrays import SourceArrays, as_class_names, check_label_range, check_same_image_shape, labelled_images
from cnnlab.errors import DataError, one_line


ZIP_MAGIC = b"PK"  # every .npz is a zip archive


NPZ_ERRORS = (OSError, EOFError, ValueError, SyntaxError, zipfile.BadZipFile, zlib.error)


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
