"""cnnlab's own epoch loop trains exactly as Keras' `fit` does, only faster."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import keras

import numpy as np
import yaml
import pytest

from cnnlab.training import tf_loop as loop
from cnnlab.config.experiment import load_config
from cnnlab.runtime.cores import CORES_VARIABLE, affinity_cores
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import Preprocessing
from cnnlab.training.job import prepare
from conftest import REPO, TINY_DIGITS

WITH_DROPOUT = TINY_DIGITS.replace("    - Flatten: {}\n", "    - Flatten: {}\n    - Dropout: {rate: 0.3}\n")

pytestmark = pytest.mark.tensorflow_only  # cnnlab/training/tf_loop.py is the TensorFlow loop; JAX and PyTorch use fit


def train_with_loop(write_config, text, size=None, **fit_arguments):
    """Seeds and builds the config's model, trains it with cnnlab's loop on its first `size` training
    images (2 epochs, no callbacks, shuffled, unless `fit_arguments` say otherwise); returns (model, logs, images)."""
    config = load_config(write_config(text))
    job = prepare(config)
    job = replace(job, splits=replace(job.splits, x_train=job.splits.x_train[:size], y_train=job.splits.y_train[:size]))
    arguments = {"batch_size": config.train.batch_size, "epochs": 2, "callbacks": [], "shuffle": True, "parts": 1,
                 "steps_per_execution": 1, **fit_arguments}
    settings = {"batch_size": arguments["batch_size"], "shuffle": arguments["shuffle"], "batch_parts": arguments["parts"],
                "steps_per_execution": arguments["steps_per_execution"]}
    logs = loop.fit(job.with_train(**settings), arguments["callbacks"], arguments["epochs"], verbose=0)
    return job.model, logs, len(job.splits.x_train)


def fit_both_ways(write_config):
    """Trains the same seeded model twice, with cnnlab's loop and with `model.fit`; returns both models and logs."""
    ours, our_logs, train_size = train_with_loop(write_config, WITH_DROPOUT, shuffle=False)
    config = load_config(write_config(WITH_DROPOUT))
    batch = config.train.batch_size
    job = prepare(config)
    theirs, splits, prep = job.model, job.splits, job.prep
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
    ("batch_size: 16", 2),  # two parts of MIN_PART images
    ("batch_size: 15", 1),  # one part would hold fewer than MIN_PART
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
    assert loop.batch_parts(config, cores=8, gpus=1) == 1


@pytest.mark.parametrize("cores, batch_size, parts", [
    (2, 64, 2), (3, 64, 2), (4, 64, 4), (6, 64, 4), (8, 64, 8), (12, 64, 8), (16, 64, 1),  # the measured rows
    (8, 32, 1),  # 8 parts of 4: fewer parts with several threads each lost, so whole batches
    (2, 8, 1),
])
def test_each_core_gets_a_part_of_its_own_where_the_batch_holds_enough_images(write_config, cores, batch_size, parts):
    config = load_config(write_config(TINY_DIGITS.replace("batch_size: 64", f"batch_size: {batch_size}")))
    assert loop.batch_parts(config, cores=cores, gpus=0) == parts


class BatchEvents(keras.callbacks.Callback):
    """The batch numbers that batch-level callbacks are called with, in order."""

    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("end", batch))

    def on_test_batch_end(self, batch, logs=None):
        self.events.append(("test_end", batch))


def tensorboard_events(log_dir):
    """(tag, step) of every scalar in the train/ event files, and whether a graph was written."""
    import tensorflow as tf

    scalars, graph = set(), False
    for path in sorted((log_dir / "train").glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            graph = graph or event.HasField("graph_def")
            scalars |= {(value.tag, event.step) for value in event.summary.value}
    return scalars, graph


def test_batch_callbacks_and_tensorboard_act_at_the_batches_fit_names_with_steps_per_execution(write_config, tmp_path):
    text = TINY_DIGITS.replace("batch_size: 64", "batch_size: 32")
    ours, theirs = BatchEvents(), BatchEvents()
    board = keras.callbacks.TensorBoard(tmp_path / "loop", update_freq=2)
    train_with_loop(write_config, text, 300, batch_size=32, epochs=2, shuffle=False, callbacks=[ours, board],
                    steps_per_execution=3)

    config = load_config(write_config(text))
    job = prepare(config)
    model, splits, prep = job.model, job.splits, job.prep
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], steps_per_execution=3)
    model.fit(make_dataset(splits.x_train[:300], splits.y_train[:300], prep, 32),
              validation_data=make_dataset(splits.x_val, splits.y_val, prep, 4 * 32), epochs=2, verbose=0, shuffle=False,
              callbacks=[theirs, keras.callbacks.TensorBoard(tmp_path / "fit", update_freq=2)])

    train_events = [event for event in ours.events if event[0] != "test_end"]
    keras_events = [event for event in theirs.events if event[0] != "test_end"]
    assert train_events[:4] == [("begin", 0), ("end", 2), ("begin", 3), ("end", 5)]
    # one deliberate difference: the last call of an epoch (batch 9 of 0..9) names its own last
    # batch, where fit names begin + steps_per_execution − 1, a batch past the epoch's end
    assert ("end", 11) in keras_events
    assert train_events == [(kind, min(batch, 9)) for kind, batch in keras_events]
    assert [e for e in ours.events if e[0] == "test_end"] == [e for e in theirs.events if e[0] == "test_end"]
    our_scalars, _ = tensorboard_events(tmp_path / "loop")
    their_scalars, _ = tensorboard_events(tmp_path / "fit")
    batch_steps = sorted(step for tag, step in our_scalars if tag == "batch_loss")
    assert batch_steps == sorted(step for tag, step in their_scalars if tag == "batch_loss") == [2, 4, 6, 8]


def test_tensorboard_draws_the_graph_of_the_compiled_training_step(write_config, tmp_path):
    board = keras.callbacks.TensorBoard(tmp_path)  # update_freq epoch: an int would skip batch 1, where the graph is drawn
    train_with_loop(write_config, TINY_DIGITS, 300, epochs=1, callbacks=[board], steps_per_execution=2)
    scalars, graph = tensorboard_events(tmp_path)
    assert graph, "TensorBoard drew no graph of the training step"
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= {tag for tag, _ in scalars}


def machine_with_parts(monkeypatch, parts):
    """This process as a machine whose core count makes `auto` split batches into `parts`."""
    monkeypatch.setattr(loop, "batch_parts", lambda config, cores=None, gpus=None: parts)


def trained_weights(run_dir):
    return keras.models.load_model(run_dir / "best.keras").get_weights()


def test_a_runs_config_records_its_batch_parts_so_dropout_trains_alike_on_any_core_count(tmp_path, monkeypatch):
    from conftest import train_run

    machine_with_parts(monkeypatch, 2)
    first = train_run(tmp_path / "two-core", WITH_DROPOUT)
    recorded = yaml.safe_load((first / "config.yaml").read_text())["train"]
    assert recorded["batch_parts"] == 2 and isinstance(recorded["steps_per_execution"], int)

    machine_with_parts(monkeypatch, 1)
    again = train_run(tmp_path / "one-core", (first / "config.yaml").read_text())
    for a, b in zip(trained_weights(first), trained_weights(again)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # what the record prevents: the same config left at auto draws other dropout masks on one core
    elsewhere = train_run(tmp_path / "one-core-auto", WITH_DROPOUT)
    assert not all(np.allclose(a, b, atol=1e-5) for a, b in zip(trained_weights(first), trained_weights(elsewhere)))


def test_batch_parts_above_one_for_a_model_that_mixes_images_is_refused_in_one_line(tmp_path):
    from conftest import run_cli

    text = TINY_DIGITS.replace("    - Flatten: {}\n", "    - BatchNormalization: {}\n    - Flatten: {}\n") + "  batch_parts: 2\n"
    config = tmp_path / "bn.yaml"
    config.write_text(text)
    result = run_cli("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {config}: train.batch_parts: can be more than 1 only on one device")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_batch_parts_split_only_within_the_core_budget(write_config, monkeypatch):
    config = load_config(write_config(TINY_DIGITS))
    monkeypatch.setenv(CORES_VARIABLE, "1")  # as a pool of two gives a worker one core of two
    assert loop.batch_parts(config, gpus=0) == 1


# Starts as a pool's worker starts (its budget given before TensorFlow starts), then sets the threads as `train` does.
BUDGET_PROBE = """
import json, sys
from cnnlab.training import tf_loop as loop
from cnnlab.runtime import processes as workers
from cnnlab.config.experiment import load_config

workers.init_worker(int(sys.argv[2]))
import tensorflow as tf
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
