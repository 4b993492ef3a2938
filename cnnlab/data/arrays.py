"""What every data source gives: uint8 NHWC images and int32 labels (SourceArrays, then DataSplits), each array checked
and named by where it came from.
"""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from cnnlab.errors import DataError


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


def as_class_names(names, where):
    names = np.asarray(names)
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise DataError(f"{where}: expected a 1-D array of strings, received dtype {names.dtype} shape {names.shape}")
    result = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist())
    if len(set(result)) != len(result):
        raise DataError(f"{where}: expected distinct names, received {', '.join(result)}")
    return result


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
