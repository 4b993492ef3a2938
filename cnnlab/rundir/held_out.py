"""A run's held-out images: the test or validation split training made, re-made exactly (same config, same seed).

A library module: `cnnlab evaluate` scores them and `cnnlab export` checks its files on them.
"""

from dataclasses import dataclass

import numpy as np

from cnnlab.data import sources as data
from cnnlab.rundir import files as run_files
from cnnlab.errors import DataError, short_repr

SPLITS = ("test", "val")


@dataclass(frozen=True)
class HeldOut:
    images: np.ndarray  # uint8 NHWC, before preprocessing
    labels: np.ndarray  # int32 indices into the run's class names
    split: str  # test, val or data-<name>: the eval/ file names
    description: str


def load_split(run, split):
    """The run's own held-out split, re-made exactly as training made it: `split`, or test where there is one, else val."""
    config = run.config
    splits = data.load_dataset(config.data, config.train.validation_split, config.seed)
    check_same_classes(splits.class_names, run.class_names, splits.description)
    has_test = splits.x_test is not None and len(splits.x_test) > 0
    split = split or ("test" if has_test else "val")
    if split not in SPLITS:
        raise DataError(f"split: expected one of {', '.join(SPLITS)}, received {short_repr(split)}")
    if split == "test" and not has_test:
        raise DataError(f"{splits.description}: has no test split (data.test_split is 0 in {run.path / run_files.CONFIG}); "
                        "use --split val, or --data PATH")
    images, labels = (splits.x_test, splits.y_test) if split == "test" else (splits.x_val, splits.y_val)
    check_image_shape(images, run, splits.description)
    return HeldOut(images, labels, split, f"{splits.description}: {split} split")


def check_same_classes(names, run_names, where):
    if tuple(names) != tuple(run_names):
        raise DataError(f"{where}: has classes {', '.join(names)} but the run was trained on {', '.join(run_names)}; "
                        "the data changed since training")


def check_image_shape(images, run, where):
    expected = tuple(run.preprocessing["image_shape"])
    if tuple(images.shape[1:]) != expected:
        found = "x".join(map(str, images.shape[1:]))
        raise DataError(f"{where}: images are {found} but the run was trained on {'x'.join(map(str, expected))} images "
                        f"({run_files.PREPROCESSING} image_shape)")
