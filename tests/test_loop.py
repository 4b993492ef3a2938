"""cnnlab's own epoch loop trains exactly as Keras' `fit` does, only faster."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cnnlab import loop
from cnnlab.config import load_config
from cnnlab.cores import CORES_VARIABLE, affinity_cores
from cnnlab.preprocess import Preprocessing, make_dataset
from cnnlab.train import prepare
from conftest import REPO, TINY_DIGITS

WITH_DROPOUT = TINY_DIGITS.replace("    - Flatten: {}\n", "    - Flatten: {}\n    - Dropout: {rate: 0.3}\n")


def train_with_loop(write_config, text, size=None, **fit_arguments):
    """Seeds and builds the config's model, trains it with cnnlab's loop on its first `size` training
    images (2 epochs, no callbacks, shuffled, unless `fit_arguments` say otherwise); returns (model, logs, images)."""
    config = load_config(write_config(text))
    model, splits, prep = prepare(config)
    train = (splits.x_train[:size], splits.y_train[:size])
    arguments = {"batch_size": config.train.batch_size, "epochs": 2, "callbacks": [], "shuffle": True, **fit_arguments}
    logs = loop.fit(model, train, (splits.x_val, splits.y_val), prep, verbose=0, seed=config.seed, **arguments)
    return model, logs, len(train[0])


def fit_both_ways(write_config):
    """Trains the same seeded model twice, with cnnlab's loop and with `model.fit`; returns both models and logs."""
    ours, our_logs, train_size = train_with_loop(write_config, WITH_DROPOUT, shuffle=False)
    config = load_config(write_config(WITH_DROPOUT))
    batch = config.train.batch_size
    theirs, splits, prep = prepare(config)
    history = theirs.fit(make_dataset(splits.x_train, splits.y_train, prep, batch),
                         validation_data=make_dataset(splits.x_val, splits.y_val, prep, batch), epochs=2, verbose=0, shuffle=False)
    return ours, our_logs, theirs, {key: values[-1] for key, values in history.history.items()}, train_size


def test_the_loop_trains_exactly_as_keras_fit(write_config):
    ours, our_logs, theirs, their_logs, train_size = fit_both_ways(write_config)
    assert train_size % 64, "the test needs a last, partial batch"
    assert set(our_logs) == set(their_logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key in their_logs:
        assert our_logs[key] == pytest.approx(their_logs[key], abs=1e-5), key
    for mine, keras_weight in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(mine, keras_weight, atol=1e-5)
    assert int(ours.optimizer.iterations) == int(theirs.optimizer.iterations) == 2 * -(-train_size // 64)


def test_each_epoch_visits_the_images_in_the_order_of_the_shuffled_tf_data_pipeline():
    labels = np.arange(300)
    images = np.zeros((300, 2, 2, 1), dtype=np.uint8)
    pipeline = make_dataset(images, labels, Preprocessing(1.0, None, None, "grayscale"), 32, shuffle=True, seed=11)
    orders = loop.epoch_orders(300, shuffle=True, seed=11)
    seen = []
    for _ in range(2):
        expected = np.concatenate([batch_labels.numpy() for _, batch_labels in pipeline])
        order = next(iter(orders)).numpy()
        np.testing.assert_array_equal(order, expected)
        seen.append(order)
    assert sorted(seen[0]) == list(range(300)) and not np.array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(next(iter(loop.epoch_orders(5, shuffle=False, seed=11))).numpy(), range(5))


class Recorder(keras.callbacks.Callback):
    def __init__(self, stop_after_first_call=False):
        super().__init__()
        self.events = []
        self.stop_after_first_call = stop_after_first_call

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch", epoch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("batch", batch, set(logs)))
        if self.stop_after_first_call:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("end", epoch, set(logs)))


def train_with(write_config, callback, epochs=2):
    """Trains the tiny model in batches of 16 with `callback`; returns the steps of an epoch."""
    _, _, train_size = train_with_loop(write_config, TINY_DIGITS, batch_size=16, epochs=epochs, callbacks=[callback])
    return -(-train_size // 16)


def test_batch_callbacks_see_the_last_batch_of_every_call_and_every_epoch_ends_on_its_last_batch(write_config):
    recorder = Recorder()
    steps = train_with(write_config, recorder)
    for epoch in range(2):
        start = recorder.events.index(("epoch", epoch))
        end = next(i for i, event in enumerate(recorder.events) if event[:2] == ("end", epoch))
        batches = [event[1] for event in recorder.events[start + 1:end]]
        assert batches == sorted(set(batches)) and batches[-1] == steps - 1
        assert recorder.events[end - 1][2] == {"loss", "accuracy"}
        assert recorder.events[end][2] == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_a_callback_that_stops_training_ends_it_after_that_call(write_config):
    recorder = Recorder(stop_after_first_call=True)
    steps = train_with(write_config, recorder, epochs=5)
    assert [event[0] for event in recorder.events] == ["epoch", "batch", "end"]
    assert recorder.events[1][1] < steps - 1, "training went on to the end of the epoch"


@pytest.mark.parametrize("count, elapsed, expected", [
    (2, 2.0, 1),  # the first call traced the function: a slow call never drops below one step
    (10, 0.05, 40),  # fast calls grow at most fourfold at a time
    (100, 0.25, 200),  # then settle on about half a second a call
    (200, 1.0, 100),
])
def test_calls_are_sized_to_last_about_half_a_second(count, elapsed, expected):
    assert loop.next_call_steps(count, elapsed) == expected


REGULARISED = TINY_DIGITS.replace("    - Dense: {units: 10, activation: softmax}",
                                  "    - Dense: {units: 10, activation: softmax, kernel_regularizer: l2}")


def train_in_parts(write_config, parts, size):
    """Two epochs of the regularised tiny model on `size` training images, batches split into `parts`."""
    model, logs, _ = train_with_loop(write_config, REGULARISED, size, batch_size=64, parts=parts)
    return model.get_weights(), logs


@pytest.mark.parametrize("parts, size", [(2, 1000), (3, 1000), (2, 129)])  # 129: the last batch has one image, one part none
def test_split_batches_train_to_the_same_weights_and_logs_as_whole_batches(write_config, parts, size):
    whole_weights, whole_logs = train_in_parts(write_config, 1, size)
    split_weights, split_logs = train_in_parts(write_config, parts, size)
    for whole, split in zip(whole_weights, split_weights):
        np.testing.assert_allclose(split, whole, atol=1e-5)
    assert split_logs == pytest.approx(whole_logs, abs=1e-5)
    assert all(np.isfinite(value) for value in split_logs.values())


def test_a_batch_splits_into_parts_differing_by_at_most_one_image():
    x, y = np.arange(10 * 3).reshape(10, 3), np.arange(10)
    parts = loop.split_batch(x, y, 3)
    assert [len(part_y) for _, part_y in parts] == [4, 3, 3]
    np.testing.assert_array_equal(np.concatenate([part_x for part_x, _ in parts]), x)
    assert [len(part_y) for _, part_y in loop.split_batch(x[:1], y[:1], 2)] == [1, 0]


@pytest.mark.parametrize("change, parts", [
    ("", 2),
    ("    - BatchNormalization: {}\n", 1),  # statistics over the whole batch
    ("    - Dense: {units: 10, activity_regularizer: l1}\n", 1),  # a sum over the whole batch
    ("batch_size: 8", 2),  # two parts of MIN_PART images
    ("batch_size: 7", 1),  # one part would hold fewer than MIN_PART
    ("distribution: {strategy: mirrored}", 1),
])
def test_only_models_that_treat_images_independently_split_their_batches(write_config, change, parts):
    text = TINY_DIGITS
    if change.startswith("    - "):
        text = text.replace("    - Flatten: {}\n", change + "    - Flatten: {}\n")
    elif change.startswith("batch_size"):
        text = text.replace("batch_size: 64", change)
    elif change:
        text += change + "\n"
    assert loop.batch_parts(load_config(write_config(text)), cores=2, gpus=0) == parts


def test_one_core_or_a_gpu_keeps_whole_batches(write_config):
    config = load_config(write_config(TINY_DIGITS))
    assert loop.batch_parts(config, cores=1, gpus=0) == 1
    assert loop.batch_parts(config, cores=16, gpus=1) == 1
    assert loop.batch_parts(config, cores=16, gpus=0) == 2


def test_batch_parts_split_only_within_the_core_budget(write_config, monkeypatch):
    config = load_config(write_config(TINY_DIGITS))
    monkeypatch.setenv(CORES_VARIABLE, "1")  # as compare gives a worker one core of two
    assert loop.batch_parts(config, gpus=0) == 1


# Starts as a compare worker starts (its budget given before TensorFlow starts), then sets the threads as `train` does.
BUDGET_PROBE = """
import json, sys
from cnnlab import compare, loop
from cnnlab.config import load_config
import tensorflow as tf

compare.init_worker(int(sys.argv[2]))
parts = loop.batch_parts(load_config(sys.argv[1]), gpus=0)
loop.share_cores(parts)
print(json.dumps([parts, tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()]))
"""


@pytest.mark.parametrize("budget", [1, 2])
def test_a_process_given_a_share_of_the_cores_keeps_its_split_and_threads_within_it(write_config, budget):
    if budget > affinity_cores():
        pytest.skip(f"needs {budget} cores")
    config_path = write_config(TINY_DIGITS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(CORES_VARIABLE, None)
    out = subprocess.run([sys.executable, "-c", BUDGET_PROBE, str(config_path), str(budget)], env=env,
                         capture_output=True, text=True, check=True).stdout
    parts = loop.batch_parts(load_config(config_path), cores=budget, gpus=0)
    assert json.loads(out.strip().splitlines()[-1]) == [parts, budget // parts, budget]
    assert parts == (1 if budget == 1 else 2)
