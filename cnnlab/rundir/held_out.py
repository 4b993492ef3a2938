"""A run's held-out images: the test or validation split training made, re-made exactly (same config, same seed).

A library module: `cnnlab evaluate` scores them and `cnnlab export` checks its files on them. The training
split can be re-made the same way, for `evaluate --split train --worst N`, which looks for mislabeled images.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import sources as data
from cnnlab.rundir import files as run_files
from cnnlab.errors import DataError, short_repr

SPLITS = ("test", "val", "train")


@dataclass(frozen=True)
class HeldOut:
    images: np.ndarray  # uint8 NHWC, before preprocessing
    labels: np.ndarray  # int32 indices into the run's class names
    split: str  # test, val or data-<name>: the eval/ file names
    description: str
    names: tuple = None  # each image's file, where the source is an image folder; None for arrays (an index names them)


def load_split(run, split):
    """The run's own held-out split, re-made exactly as training made it: `split`, or test where there is one, else val."""
    config = run.config
    splits = data.load_dataset(config.data, config.train.validation_split, config.seed, config.train.fold)
    check_same_classes(splits.class_names, run.class_names, splits.description)
    has_test = splits.x_test is not None and len(splits.x_test) > 0
    split = split or ("test" if has_test else "val")
    if split not in SPLITS:
        raise DataError(f"split: expected one of {', '.join(SPLITS)}, received {short_repr(split)}")
    if split == "test" and not has_test:
        raise DataError(f"{splits.description}: has no test split (data.test_split is 0 in {run.path / run_files.CONFIG}); "
                        "use --split val, or --data PATH")
    images, labels = {"test": (splits.x_test, splits.y_test), "val": (splits.x_val, splits.y_val),
                      "train": (splits.x_train, splits.y_train)}[split]
    check_image_shape(images, run, splits.description)
    names = image_folder_names(config, split, labels) if config.data.source == "image_folder" else None
    return HeldOut(images, labels, split, f"{splits.description}: {split} split", names)


def image_folder_names(config, split, labels):
    """The file of each image of `split`, found by splitting the folder's file list as load_dataset splits its images.

    scikit-learn's split depends only on the labels, the fraction and the seed, so splitting
    the positions of the files with the same labels picks the same samples on each side. An
    image folder brings no split of its own, so test (data.test_split) comes first, then val.
    """
    files, classes = folder_files(config.data.path)
    positions = np.arange(len(files))
    test = positions[:0]
    if config.data.test_split > 0:
        positions, classes, test, _ = data.split_train_val(positions, classes, config.data.test_split, config.seed)
    if config.train.fold is not None:  # an image folder brings no validation split of its own, so the pool is what is left
        kept, held = data.fold_positions(classes, config.train.fold, config.seed)
        train, val = positions[kept], positions[held]
    else:
        train, _, val, _ = data.split_train_val(positions, classes, config.train.validation_split, config.seed)
    chosen = {"test": test, "val": val, "train": train}[split]
    if len(chosen) != len(labels):  # the folder changed since the images were read: no names rather than wrong ones
        return None
    return tuple(str(files[i]) for i in chosen)


def folder_files(path):
    """An image folder's files and their class numbers, in the order its images are read (class folders sorted, then
    `walk_images`)."""
    from cnnlab.data.image_files import class_folders, walk_images

    files, classes = [], []
    for label, class_dir in enumerate(class_folders(Path(path).expanduser())):
        found = list(walk_images(class_dir))
        files += found
        classes += [label] * len(found)
    return files, np.asarray(classes, dtype=np.int32)


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
