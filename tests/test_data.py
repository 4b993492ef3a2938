"""Tests for cnnlab.data on tiny data written into tmp_path; nothing is downloaded."""

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from cnnlab.config.schema import DataConfig
from cnnlab.data.sources import (FASHION_MNIST_CLASSES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, load_arrays, load_dataset,
                                 split_train_val, to_color_mode)
from cnnlab.errors import DataError

FASHION_SYSTEM_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_network_and_empty_keras_cache(tmp_path, monkeypatch):
    """No test may download, and none may pick up a dataset from the real ~/.keras."""
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))


def data_config(**changes):
    base = DataConfig(source="digits", path=None, image_size=None, pad_to=None, color_mode="grayscale", rescale=1 / 255, test_split=0.0)
    return dataclasses.replace(base, **changes)


# ---------------------------------------------------------------- factories


def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def tiny_mnist_arrays(n_train=6, n_test=4, size=5):
    """Images whose pixels encode their index, so a test can tell which image went where."""
    x_train = (np.arange(n_train * size * size) % 256).reshape(n_train, size, size).astype(np.uint8)
    x_test = (255 - np.arange(n_test * size * size) % 256).reshape(n_test, size, size).astype(np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = ((np.arange(n_test) + 3) % 10).astype(np.uint8)
    return x_train, y_train, x_test, y_test


def write_idx_folder(folder, arrays, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = arrays
    files = {
        "train-images-idx3-ubyte": idx_bytes(x_train, IDX_IMAGES_MAGIC),
        "train-labels-idx1-ubyte": idx_bytes(y_train, IDX_LABELS_MAGIC),
        "t10k-images-idx3-ubyte": idx_bytes(x_test, IDX_IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte": idx_bytes(y_test, IDX_LABELS_MAGIC),
    }
    for name, content in files.items():
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return folder


def write_keras_npz(path, arrays):
    path.parent.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = arrays
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def write_image_folder(root, classes=("cat", "dog", "owl"), per_class=6, size=12):
    """Each class gets one solid colour, so labels can be checked against pixels."""
    from PIL import Image

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), colours[index % len(colours)]).save(folder / f"{i}.png")
    return root


# ---------------------------------------------------------------- IDX files


def test_fashion_mnist_reads_gzipped_idx_files_from_data_path(tmp_path):
    arrays = tiny_mnist_arrays()
    folder = write_idx_folder(tmp_path / "fashion", arrays)

    source = load_arrays(data_config(source="fashion_mnist", path=str(folder)))

    assert source.x_train.shape == (6, 5, 5, 1) and source.x_train.dtype == np.uint8
    assert source.x_test.shape == (4, 5, 5, 1)
    np.testing.assert_array_equal(source.x_train[..., 0], arrays[0])
    np.testing.assert_array_equal(source.x_test[..., 0], arrays[2])
    assert source.y_train.dtype == np.int32 and source.y_train.tolist() == arrays[1].tolist()
    assert source.y_test.tolist() == arrays[3].tolist()
    assert source.class_names == FASHION_MNIST_CLASSES
    assert source.description == f"fashion_mnist: IDX files in {folder}"


def test_mnist_reads_uncompressed_idx_files_with_digit_class_names(tmp_path):
    arrays = tiny_mnist_arrays()
    folder = write_idx_folder(tmp_path / "mnist", arrays, compress=False)

    source = load_arrays(data_config(source="mnist", path=str(folder)))

    np.testing.assert_array_equal(source.x_train[..., 0], arrays[0])
    assert source.y_train.tolist() == arrays[1].tolist()
    assert source.class_names == tuple(str(i) for i in range(10))


def test_mnist_reads_keras_style_npz_from_data_path(tmp_path):
    arrays = tiny_mnist_arrays()
    path = write_keras_npz(tmp_path / "mnist.npz", arrays)

    source = load_arrays(data_config(source="mnist", path=str(path)))

    np.testing.assert_array_equal(source.x_test[..., 0], arrays[2])
    assert source.y_test.tolist() == arrays[3].tolist()
    assert source.x_train.shape == (6, 5, 5, 1)
    assert source.description == f"mnist: {path}"


def test_mnist_is_found_in_the_keras_cache(tmp_path):
    write_keras_npz(tmp_path / "keras-home" / "datasets" / "mnist.npz", tiny_mnist_arrays())

    x_train = load_arrays(data_config(source="mnist")).x_train

    assert x_train.shape == (6, 5, 5, 1)


def test_fashion_mnist_is_found_in_the_keras_cache_folder(tmp_path):
    folder = write_idx_folder(tmp_path / "keras-home" / "datasets" / "fashion-mnist", tiny_mnist_arrays())

    description = load_arrays(data_config(source="fashion_mnist")).description

    assert description == f"fashion_mnist: IDX files in {folder}"


@pytest.mark.skipif(not FASHION_SYSTEM_FOLDER.exists(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_read_from_the_debian_system_folder():
    source = load_arrays(data_config(source="fashion_mnist"))

    assert source.x_train.shape == (60000, 28, 28, 1) and source.x_train.dtype == np.uint8
    assert source.x_test.shape == (10000, 28, 28, 1)
    assert source.y_train.shape == (60000,) and source.y_test.shape == (10000,)
    assert sorted(set(source.y_train.tolist())) == list(range(10))
    assert source.class_names[0] == "T-shirt/top" and source.class_names[9] == "Ankle boot"
    assert source.description == f"fashion_mnist: IDX files in {FASHION_SYSTEM_FOLDER}"


def test_missing_mnist_names_every_place_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    if Path("/usr/share/datasets/mnist").exists():
        pytest.skip("MNIST is installed system-wide here")

    with pytest.raises(DataError) as caught:
        load_arrays(data_config(source="mnist"))

    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "keras-home" / "datasets" / "mnist.npz") in message
    assert "/usr/share/datasets/mnist" in message
    assert "CNNLAB_OFFLINE" in message
    assert "To get it: put mnist.npz in ~/.keras/datasets, or set data.path" in message


def test_missing_data_path_is_an_error_not_a_fallback(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(DataError, match=f"data.path {missing}: not found"):
        load_arrays(data_config(source="fashion_mnist", path=str(missing)))


def test_data_path_folder_without_idx_files_names_the_missing_files(tmp_path):
    folder = write_idx_folder(tmp_path / "partial", tiny_mnist_arrays())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_arrays(data_config(source="mnist", path=str(folder)))


def test_truncated_idx_file_is_an_error_naming_it(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", tiny_mnist_arrays())
    images = folder / "train-images-idx3-ubyte.gz"
    content = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(content[:-7]))

    with pytest.raises(DataError, match=f"{images}: truncated or corrupt IDX file"):
        load_arrays(data_config(source="mnist", path=str(folder)))


def test_cut_off_gzip_stream_is_an_error_naming_it(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", tiny_mnist_arrays())
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:12])

    with pytest.raises(DataError, match=f"{labels}: cannot read this IDX file"):
        load_arrays(data_config(source="mnist", path=str(folder)))


def test_idx_file_with_wrong_magic_number_is_an_error(tmp_path):
    arrays = tiny_mnist_arrays()
    folder = write_idx_folder(tmp_path / "mnist", arrays)
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(arrays[0], IDX_IMAGES_MAGIC)))

    with pytest.raises(DataError, match="expected an IDX labels file \\(magic number 0x00000801\\)"):
        load_arrays(data_config(source="mnist", path=str(folder)))


# ---------------------------------------------------------------- image folders


def test_image_folder_loads_grayscale_images_with_folder_names_as_classes(tmp_path):
    root = write_image_folder(tmp_path / "images")

    source = load_arrays(data_config(source="image_folder", path=str(root), image_size=(12, 12)))

    assert source.x_train.shape == (18, 12, 12, 1) and source.x_train.dtype == np.uint8
    assert source.y_train.dtype == np.int32 and sorted(source.y_train.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    assert source.class_names == ("cat", "dog", "owl")
    assert source.x_test is None
    assert source.description.startswith("image_folder: 18 images in 3 class folders under")


def test_image_folder_loads_rgb_pixels_matching_their_class(tmp_path):
    root = write_image_folder(tmp_path / "images")

    source = load_arrays(data_config(source="image_folder", path=str(root), image_size=(12, 12), color_mode="rgb"))
    x, y = source.x_train, source.y_train

    assert x.shape == (18, 12, 12, 3)
    dominant_channel = x.mean(axis=(1, 2)).argmax(axis=1)
    assert dominant_channel.tolist() == y.tolist()


def test_image_folder_resizes_to_image_size(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=1)

    x = load_arrays(data_config(source="image_folder", path=str(root), image_size=(6, 8))).x_train

    assert x.shape == (3, 6, 8, 1)


def test_image_folder_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found; expected a folder of class sub-folders"):
        load_arrays(data_config(source="image_folder", path=str(tmp_path / "missing")))


def test_image_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()

    with pytest.raises(DataError, match="has no class sub-folders"):
        load_arrays(data_config(source="image_folder", path=str(tmp_path / "empty")))


def test_image_folder_whose_class_folders_hold_no_images_is_an_error(tmp_path):
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "notes.txt").write_text("not an image")

    with pytest.raises(DataError, match=r"no images \(.bmp, .gif, .jpeg, .jpg, .png\) in its class sub-folders \(cat\)"):
        load_arrays(data_config(source="image_folder", path=str(tmp_path / "images")))


def test_image_folder_with_an_undecodable_image_names_that_file(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=1)
    broken = root / "dog" / "broken.jpg"
    broken.write_text("not really a jpeg")

    with pytest.raises(DataError, match=f"{broken}: cannot decode this image"):
        load_arrays(data_config(source="image_folder", path=str(root), image_size=(12, 12)))


def test_image_folder_path_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")

    with pytest.raises(DataError, match="is not a folder"):
        load_arrays(data_config(source="image_folder", path=str(tmp_path / "file.png")))


# ---------------------------------------------------------------- .npz files


def test_npz_with_test_split_keeps_it(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((5, 4, 4), np.uint8), y_train=np.array([0, 1, 2, 1, 0]), x_test=np.ones((2, 4, 4), np.uint8), y_test=np.array([2, 0]))

    source = load_arrays(data_config(source="npz", path=str(path)))

    assert source.x_train.shape == (5, 4, 4, 1) and source.x_test.shape == (2, 4, 4, 1)
    assert source.y_test.tolist() == [2, 0]
    assert source.class_names == ("0", "1", "2")
    assert source.description == f"npz: {path}"


def test_npz_without_test_split_has_none(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((5, 4, 4, 3), np.uint8), y_train=np.array([0, 1, 2, 1, 0]))

    source = load_arrays(data_config(source="npz", path=str(path), color_mode="rgb"))
    x_test, y_test = source.x_test, source.y_test

    assert x_test is None and y_test is None


def test_npz_with_its_own_validation_split_keeps_it_whatever_validation_split_says(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((6, 4, 4), np.uint8), y_train=np.array([0, 1, 0, 1, 0, 1]),
             x_val=np.full((3, 4, 4), 9, np.uint8), y_val=np.array([1, 3, 0]))

    splits = load_dataset(data_config(source="npz", path=str(path)), validation_split=0.5, seed=0)

    assert splits.x_train.shape == (6, 4, 4, 1) and splits.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    assert splits.x_val.shape == (3, 4, 4, 1) and (splits.x_val == 9).all() and splits.y_val.tolist() == [1, 3, 0]
    assert splits.x_test is None
    assert splits.class_names == ("0", "1", "2", "3")  # class 3 appears only in y_val


def test_npz_validation_split_counts_in_test_split_carving(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.arange(40, dtype=np.uint8).reshape(10, 2, 2), y_train=np.arange(10) % 2,
             x_val=np.zeros((2, 2, 2), np.uint8), y_val=np.array([0, 1]))

    splits = load_dataset(data_config(source="npz", path=str(path), test_split=0.2), validation_split=0.5, seed=0)

    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (8, 2, 2)


def test_all_images_of_an_npz_include_its_validation_and_test_splits(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1, 0]), x_val=np.ones((2, 4, 4), np.uint8),
             y_val=np.array([1, 1]), x_test=np.full((1, 4, 4), 2, np.uint8), y_test=np.array([0]))

    images, labels = load_arrays(data_config(source="npz", path=str(path))).all_images()

    assert images[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 2] and labels.tolist() == [0, 1, 0, 1, 1, 0]


@pytest.mark.parametrize("arrays, message", [
    ({"x_val": np.zeros((1, 4, 4), np.uint8)}, "has x_val but no y_val"),
    ({"y_val": np.array([0])}, "has y_val but no x_val"),
    ({"x_val": np.zeros((2, 4, 4), np.uint8), "y_val": np.array([0])}, "y_val: expected one label per image"),
    ({"x_val": np.zeros((1, 5, 5), np.uint8), "y_val": np.array([0])}, r"x_val: expected images shaped like x_train \(4, 4, 1\)"),
])
def test_npz_validation_split_errors_name_the_array(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), **arrays)

    with pytest.raises(DataError, match=f"{path}: .*{message}"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_class_names_are_used_when_present(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), class_names=np.array(["ant", "bee"]))

    class_names = load_arrays(data_config(source="npz", path=str(path))).class_names

    assert class_names == ("ant", "bee")


def test_npz_float_pixels_in_unit_range_are_scaled_to_0_255(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.array([[[0.0, 0.5], [1.0, 0.2]]], np.float32), y_train=np.array([0]))

    x = load_arrays(data_config(source="npz", path=str(path))).x_train

    assert x.dtype == np.uint8
    assert x[0, :, :, 0].tolist() == [[0, 128], [255, 51]]


def test_npz_integer_pixels_in_0_255_are_cast(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.array([[[0, 7], [255, 1]]], np.int64), y_train=np.array([0]))

    x = load_arrays(data_config(source="npz", path=str(path))).x_train

    assert x.dtype == np.uint8 and x[0, :, :, 0].tolist() == [[0, 7], [255, 1]]


def test_npz_pixels_outside_0_255_are_an_error(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.array([[[0, 300], [1, 2]]], np.int64), y_train=np.array([0]))

    with pytest.raises(DataError, match=f"{path}: x_train: expected pixel values in 0..255"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_one_hot_labels_become_class_indices(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.eye(4, dtype=np.float32)[[2, 0, 1]])

    source = load_arrays(data_config(source="npz", path=str(path)))
    y, class_names = source.y_train, source.class_names

    assert y.dtype == np.int32 and y.tolist() == [2, 0, 1]
    assert class_names == ("0", "1", "2", "3")


def test_npz_missing_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4), np.uint8))

    with pytest.raises(DataError, match=f"{path}: missing y_train"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_with_x_test_but_no_y_test_is_an_error(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1]), x_test=np.zeros((1, 4, 4), np.uint8))

    with pytest.raises(DataError, match="has x_test but no y_test"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_with_mismatched_lengths_is_an_error(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1]))

    with pytest.raises(DataError, match="expected one label per image"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_that_is_not_a_zip_file_is_an_error(tmp_path):
    path = tmp_path / "data.npz"
    path.write_text("just text")

    with pytest.raises(DataError, match=f"{path}: is not an .npz \\(zip\\) archive"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_object_arrays_are_refused_because_they_need_pickle(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.array([0, 1], dtype=object))

    with pytest.raises(DataError, match="object arrays are refused"):
        load_arrays(data_config(source="npz", path=str(path)))


def test_npz_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found; expected an .npz archive with x_train, y_train"):
        load_arrays(data_config(source="npz", path=str(tmp_path / "missing.npz")))


# ---------------------------------------------------------------- digits and splits


def test_digits_are_uint8_images_of_8x8_scaled_to_0_255():
    source = load_arrays(data_config(source="digits"))

    assert source.x_train.shape == (1797, 8, 8, 1) and source.x_train.dtype == np.uint8
    assert source.x_train.min() == 0 and source.x_train.max() == 255
    assert source.y_train.shape == (1797,) and source.y_train.dtype == np.int32
    assert source.x_test is None
    assert source.class_names == tuple(str(i) for i in range(10))


def test_digits_without_test_split_have_no_test_set():
    splits = load_dataset(data_config(source="digits"), validation_split=0.2, seed=0)

    assert splits.x_test is None and splits.y_test is None
    assert len(splits.y_train) + len(splits.y_val) == 1797


def test_test_and_validation_splits_partition_the_data():
    splits = load_dataset(data_config(source="digits", test_split=0.1), validation_split=0.2, seed=3)
    x_all = load_arrays(data_config(source="digits")).x_train

    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (1293, 324, 180)
    parts = np.concatenate([splits.x_train, splits.x_val, splits.x_test]).reshape(1797, -1)
    # the same multiset of images: nothing lost, nothing used twice (digits has no duplicate images)
    assert np.array_equal(np.unique(parts, axis=0), np.unique(x_all.reshape(1797, -1), axis=0))
    assert len(np.unique(parts, axis=0)) == 1797


def test_test_split_is_stratified_by_class():
    splits = load_dataset(data_config(source="digits", test_split=0.1), validation_split=0.2, seed=3)
    y_all = load_arrays(data_config(source="digits")).y_train

    expected = np.bincount(y_all) * 0.1
    assert np.all(np.abs(np.bincount(splits.y_test, minlength=10) - expected) <= 1)


def test_same_seed_gives_identical_splits():
    config = data_config(source="digits", test_split=0.1)

    first = load_dataset(config, validation_split=0.2, seed=7)
    second = load_dataset(config, validation_split=0.2, seed=7)

    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


def test_different_seeds_give_different_splits():
    config = data_config(source="digits")

    first = load_dataset(config, validation_split=0.2, seed=1)
    second = load_dataset(config, validation_split=0.2, seed=2)

    assert not np.array_equal(first.y_val, second.y_val)


def test_official_test_split_ignores_data_test_split(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", tiny_mnist_arrays(n_train=20, n_test=4))

    splits = load_dataset(data_config(source="mnist", path=str(folder), test_split=0.5), validation_split=0.25, seed=0)

    assert len(splits.y_test) == 4
    assert len(splits.y_train) + len(splits.y_val) == 20


def test_split_falls_back_to_unstratified_when_a_class_has_one_sample():
    x = np.arange(10).reshape(10, 1)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])

    x_train, y_train, x_val, y_val = split_train_val(x, y, 0.3, seed=0)

    assert (len(y_train), len(y_val)) == (7, 3)
    assert sorted(x_train[:, 0].tolist() + x_val[:, 0].tolist()) == list(range(10))


def test_split_of_too_few_samples_is_a_data_error():
    with pytest.raises(DataError, match="cannot hold out 0.2 of 1 samples"):
        split_train_val(np.zeros((1, 2)), np.array([0]), 0.2, seed=0)


# ---------------------------------------------------------------- colour modes


def test_grayscale_source_asked_for_as_rgb_repeats_the_channel():
    x = load_arrays(data_config(source="digits", color_mode="rgb")).x_train

    assert x.shape == (1797, 8, 8, 3)
    assert np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])


def test_rgb_to_grayscale_uses_bt601_luma_weights():
    pixels = np.array([[[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]]], np.uint8)

    gray = to_color_mode(pixels, "grayscale")

    assert gray.shape == (1, 1, 4, 1) and gray.dtype == np.uint8
    assert gray[0, 0, :, 0].tolist() == [76, 150, 29, 18]


def test_rgb_npz_asked_for_as_grayscale_has_one_channel(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=np.full((2, 3, 3, 3), 100, np.uint8), y_train=np.array([0, 1]))

    x = load_arrays(data_config(source="npz", path=str(path))).x_train

    assert x.shape == (2, 3, 3, 1) and np.all(x == 100)
