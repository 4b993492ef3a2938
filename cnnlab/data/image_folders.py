"""A folder of class sub-folders as uint8 arrays: Keras' directory loader under TensorFlow, the same files and pixels
read with Pillow elsewhere, every problem named by the file or folder.
"""

from pathlib import Path

import numpy as np

from cnnlab.data.arrays import SourceArrays
from cnnlab.data.image_files import IMAGE_EXTENSIONS, class_folders, walk_images
from cnnlab.errors import DataError, first_line, one_line


DEFAULT_IMAGE_SIZE = (256, 256)  # Keras' own default for image_dataset_from_directory


READ_BATCH = 256


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
