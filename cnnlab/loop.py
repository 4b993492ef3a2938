"""The epoch loop of single-device training: Keras' own train and test steps, many per call.

Why not `model.fit`: on the 2-core machines cnnlab is measured on, `fit` ran at about
0.8× of what its own compiled step can do (BENCHMARKS.md). The difference is the loop
around the step: `tf.data` threads that compete with the compute threads for two cores,
and a return to Python after every batch. This loop removes both and nothing else:

- batches are gathered from the uint8 images held in memory and preprocessed inside
  the compiled function (the same `preprocess_images` that evaluate and predict use);
- one call runs as many steps as take about half a second, so Ctrl-C, SIGTERM, the
  progress bar and batch-level callbacks (TerminateOnNaN) still act within a second.

Each epoch visits the images in the order `tf.data`'s seeded shuffle gives that epoch,
the same order the `tf.data` pipeline of a tf.distribute run sees, so both paths train
alike on the same seed.

What stays Keras': `train_step` and `test_step` (loss, regularisation, metrics, optimizer,
loss scaling), and the callbacks, called through Keras' `CallbackList` in the order
`fit` calls them. Under a tf.distribute strategy cnnlab uses `fit` itself.
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf

from cnnlab.preprocess import preprocess_images

SECONDS_PER_CALL = 0.5  # how long one call of the compiled steps should run
FIRST_CALL_STEPS = 2  # the first call also traces the function: keep it short


def fit(model, train, val, prep, *, batch_size, epochs, callbacks, verbose, shuffle, seed, initial_epoch=0):
    """Trains `model` as `model.fit` would with these arguments; `train` and `val` are (uint8 images, labels).

    `initial_epoch` is where a resumed run starts: the epoch Keras' BackupAndRestore holds.
    Returns the last epoch's logs.
    """
    x_train, y_train = train
    x_val, y_val = val
    train_steps = math.ceil(len(x_train) / batch_size)
    val_steps = math.ceil(len(x_val) / batch_size)
    callbacks = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                                             epochs=epochs, steps=train_steps, model=model)
    run_train = compiled_steps(model.train_step, x_train, y_train, prep, batch_size, model.jit_compile)
    run_test = compiled_steps(model.test_step, x_val, y_val, prep, batch_size, model.jit_compile)
    orders = epoch_orders(len(x_train), shuffle, seed)
    val_order = tf.range(len(x_val), dtype=tf.int32)

    model.stop_training = False
    callbacks.on_train_begin()
    logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        run_epoch(model, run_train, tf.cast(next(iter(orders)), tf.int32), train_steps, callbacks.on_train_batch_begin, callbacks.on_train_batch_end)
        epoch_logs = metrics_result(model)

        model.reset_metrics()  # validation, as `fit` runs it through `evaluate`
        callbacks.on_test_begin()
        run_epoch(model, run_test, val_order, val_steps, callbacks.on_test_batch_begin, callbacks.on_test_batch_end)
        val_logs = metrics_result(model)
        callbacks.on_test_end(val_logs)

        epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        logs = epoch_logs
        if model.stop_training:
            break
    if epochs > initial_epoch:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=logs)
    return logs


def compiled_steps(step, images, labels, prep, batch_size, jit_compile=False):
    """A compiled function that runs `step` on batches first … first+count−1 of an epoch's `order`.

    The images stay uint8 in one resident tensor; each batch is gathered, cast and
    scaled inside the function, so no input pipeline runs beside the training.
    """
    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels)
    if jit_compile:  # as `fit` does: XLA compiles the step, the loop around it stays a graph
        step = tf.function(step, jit_compile=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
    def run(order, first, count):
        for index in tf.range(first, first + count):
            batch = order[index * batch_size:(index + 1) * batch_size]
            step((preprocess_images(tf.gather(images, batch), prep), tf.gather(labels, batch)))

    return run


def run_epoch(model, run, order, steps, on_batch_begin, on_batch_end):
    """Runs `steps` batches in calls of about SECONDS_PER_CALL, calling the batch callbacks around each call.

    Like `fit` with `steps_per_execution`, a callback sees the last batch of each call;
    it may stop training (`model.stop_training`), which ends the epoch after that call.
    """
    first, count = 0, FIRST_CALL_STEPS
    while first < steps:
        count = min(count, steps - first)
        on_batch_begin(first)
        started = time.perf_counter()
        run(order, tf.constant(first, tf.int32), tf.constant(count, tf.int32))
        elapsed = time.perf_counter() - started
        first += count
        on_batch_end(first - 1, metrics_result(model))
        if model.stop_training:
            return
        count = next_call_steps(count, elapsed)


def next_call_steps(count, elapsed):
    """Steps for the next call, so that it lasts about SECONDS_PER_CALL; grows at most 4× per call."""
    wanted = count * SECONDS_PER_CALL / max(elapsed, 1e-6)
    return max(1, min(int(wanted), 4 * count))


def epoch_orders(size, shuffle, seed):
    """A dataset whose every pass yields one epoch's order of the training images, as one tensor.

    It shuffles indices exactly as `preprocess.make_dataset` shuffles images (a buffer of
    the whole set, the same seed, reshuffled on each pass), so pass k is epoch k's order there too.
    """
    indices = tf.data.Dataset.range(size)
    if shuffle:
        indices = indices.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return indices.batch(size)  # one element per pass; a per-element map here would cost seconds an epoch


def metrics_result(model):
    """The model's metrics as plain numbers, as `fit` hands them to callbacks at the end of an epoch."""
    return {name: float(value) if np.ndim(value) == 0 else np.asarray(value)
            for name, value in model.get_metrics_result().items()}
