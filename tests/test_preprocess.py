"""The preprocessing shared by train, evaluate and predict: resize, then pad, then scale."""

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import (Preprocessing, check_input_shape, output_shape, preprocess_images, preprocessing_for,
                                       preprocessing_from_record, preprocessing_record)
from cnnlab.config.experiment import config_from_text

from conftest import TINY_DIGITS


def prep(**kwargs):
    return Preprocessing(**{"rescale": 1 / 255, "image_size": None, "pad_to": None, "color_mode": "grayscale", **kwargs})


def test_scaling_maps_uint8_to_zero_one():
    images = np.array([[[[0], [255]], [[51], [102]]]], dtype=np.uint8)
    out = preprocess_images(images, prep()).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)


def test_padding_centres_the_image_with_zeros():
    images = np.full((1, 28, 28, 1), 255, dtype=np.uint8)
    out = preprocess_images(images, prep(pad_to=(32, 32))).numpy()[0, :, :, 0]
    assert out.shape == (32, 32)
    assert out[2:30, 2:30].min() == 1.0
    assert out[:2].max() == 0 and out[30:].max() == 0 and out[:, :2].max() == 0 and out[:, 30:].max() == 0


def test_resize_happens_before_padding():
    images = np.full((2, 8, 8, 1), 128, dtype=np.uint8)
    out = preprocess_images(images, prep(image_size=(16, 16), pad_to=(20, 20)))
    assert tuple(out.shape) == (2, 20, 20, 1)
    assert output_shape(prep(image_size=(16, 16), pad_to=(20, 20)), (8, 8, 1)) == (20, 20, 1)


def test_padding_smaller_than_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^data.pad_to: \[4, 4\] is smaller than the images \(8x8\)"):
        output_shape(prep(pad_to=(4, 4)), (8, 8, 1))


def test_input_shape_must_match_what_the_data_becomes():
    check_input_shape(prep(pad_to=(32, 32)), (28, 28, 1), (32, 32, 1))
    with pytest.raises(ConfigError, match=r"^model.input_shape: is \[28, 28, 1\] but the data gives images of shape \[32, 32, 1\]"):
        check_input_shape(prep(pad_to=(32, 32)), (28, 28, 1), (28, 28, 1))


def test_the_record_round_trips():
    original = prep(image_size=(10, 12), pad_to=(16, 16))
    record = preprocessing_record(original, (8, 8, 1), (16, 16, 1))
    assert preprocessing_from_record(record) == original
    assert record["image_shape"] == [8, 8, 1]


def test_the_dataset_yields_scaled_batches_in_order_without_shuffle():
    x = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1)
    y = np.arange(5, dtype=np.int32)
    batches = list(make_dataset(x, y, preprocessing_for(config_from_text(TINY_DIGITS).data), batch_size=2))
    assert [len(labels) for _, labels in batches] == [2, 2, 1]
    first_images, first_labels = batches[0]
    np.testing.assert_allclose(first_images.numpy(), x[:2] / 255, rtol=1e-6)
    assert first_labels.numpy().tolist() == [0, 1]


def test_seeded_shuffle_gives_the_same_order_every_time():
    x = np.zeros((50, 2, 2, 1), dtype=np.uint8)
    y = np.arange(50, dtype=np.int32)
    order = lambda: np.concatenate([labels.numpy() for _, labels in make_dataset(x, y, prep(), 8, shuffle=True, seed=3)])
    first, second = order(), order()
    assert first.tolist() == second.tolist()
    assert sorted(first.tolist()) == list(range(50)) and first.tolist() != list(range(50))
