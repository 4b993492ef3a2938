"""Every use cnnlab makes of Keras' and TensorFlow's private parts, in one place.

Each is something their public API does not offer and cnnlab needs; each has a test
in tests/test_keras_compat.py that fails with a message naming what changed, so a
Keras or TensorFlow release that moves one is found by the tests, not by a user.
The versions these were last checked on are the floors in pyproject.toml.

This module imports no TensorFlow at the top: runs.py reads its file names.
"""

from contextlib import contextmanager

# Keras' BackupAndRestore writes these into its backup folder (with double_checkpoint, a
# `.bkp` copy of each); cnnlab reads the epoch from the first and repairs a pair cut off by a kill.
BACKUP_METADATA = "training_metadata.json"  # {"epoch": completed epochs, "batch": ...}
BACKUP_WEIGHTS = "latest.weights.h5"  # model and optimizer variables


def loss_tracker(model):
    """The metric `fit` logs as "loss": cnnlab's split step updates it as Keras' `train_step` does."""
    return model._loss_tracker


def build_from_spec(model, spec, strategy):
    """Builds the model's metrics, loss and optimizer from a dataset's spec, and stops Keras peeking at a batch.

    Under a strategy, Keras 3 (`_maybe_symbolic_build`) reads one batch from a fresh
    iterator before `fit`: see distribute.build_without_peeking for why cnnlab must not let it.
    """
    with strategy.scope():
        model._symbolic_build(data_batch=spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # already built: nothing to peek at


def random_states(model):
    """The state variables of the model's random generators (Dropout, GaussianNoise, random augmentation).

    They are model variables but not weights, so Keras' BackupAndRestore does not save them.
    """
    return [variable for variable in model.non_trainable_variables if variable.path.endswith("seed_generator_state")]


def has_schedule(optimizer):
    """Whether the optimizer's learning rate is a schedule: `optimizer.learning_rate` only shows its current value."""
    import keras

    return isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)


def inbound_layers(layer):
    """The nodes feeding `layer` in the model's graph (functional models), or none."""
    try:
        node = layer._inbound_nodes[0]
    except (AttributeError, IndexError):
        return []
    return list(getattr(node, "parent_nodes", []))


def in_multi_worker_mode(strategy):
    """Whether a tf.distribute strategy spans several workers (the chief alone writes the run folder)."""
    return strategy.extended._in_multi_worker_mode()


def reduce_scalar_logs_across_workers():
    """Works around Keras 3 averaging each step's scalar logs over `axis=0` under MultiWorkerMirroredStrategy.

    Keras' `reduce_per_replica` calls `strategy.reduce("MEAN", v, axis=0)` in multi-worker
    mode, which fails for the scalar loss and metrics ("Invalid reduction dimension 0 for
    input with 0 dimensions", tensorflow/tensorflow#72388). A scalar is averaged over the
    replicas instead (axis=None); everything else goes to Keras unchanged. Idempotent.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "cnnlab_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def reduce(value):
            local = value.values[0] if trainer._is_per_replica_instance(value) else value  # one replica per worker: a plain tensor
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica.cnnlab_patched = True
    trainer.reduce_per_replica = reduce_per_replica


@contextmanager
def applications_get_file(get_file):
    """Routes keras.applications' weight downloads through `get_file(original, fname, origin, **kwargs)` while it is open.

    Every keras.applications constructor given `weights="imagenet"` fetches its file with
    `keras.src.utils.file_utils.get_file(file_name, url, cache_subdir="models", ...)`,
    looked up on that module at the call; the file name depends on the family and its
    arguments (alpha, input size). Answering the call is how cnnlab learns the exact name,
    loads a copy already in the Keras cache without the network, and refuses to download
    offline, with one line naming the file.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file
    file_utils.get_file = lambda fname=None, origin=None, **kwargs: get_file(original, fname, origin, **kwargs)
    try:
        yield
    finally:
        file_utils.get_file = original


def keep_tensorflow_unstarted():
    """On JAX and PyTorch, stops Keras from importing TensorFlow merely because it is installed.

    Keras' `set_random_seed` (and a few other helpers) ask its lazy `tensorflow` module
    whether TensorFlow is `available`, which imports it: seconds of start-up and its log
    lines in a process that never computes with it. Answered "no" here, those checks skip
    TensorFlow; a feature that really uses it (TensorBoard's summaries) still imports it.
    """
    from keras.src.utils import module_utils

    if module_utils.tensorflow.module is None:
        module_utils.tensorflow._available = False


# Keras' TensorBoard callback keeps its writers and batch counter in private attributes; cnnlab's
# RunTensorBoard (tracking/tensorboard.py) continues a resumed run's logs through these.

def set_tensorboard_train_step(callback, calls):
    """Numbers the next batch-level summary `calls`: the compiled calls a resumed run already made."""
    callback._global_train_batch = calls


def tensorboard_validation_writer(callback):
    """The writer of the callback's validation/ event file."""
    return callback._val_writer


def tensorboard_writers(callback):
    """Every summary writer the callback has opened (train/, validation/)."""
    return list(callback._writers.values())


def pop_tensorboard_writer(callback):
    """Restores the default writer the callback replaced when it entered a writer's context."""
    callback._pop_writer()


def close_tensorboard(callback):
    """Closes the event files of an interrupted `fit` (Keras closes them only when training ends) and
    gives back every default writer the callback set for batch-level summaries."""
    while callback._prev_summary_state:
        callback._pop_writer()
    callback._close_writers()
    callback._writers = {}


def set_train_function(model, function):
    """Makes `function` the step `model.fit`-style callbacks see as the model's training step.

    cnnlab's TensorFlow loop compiles its own steps; Keras' TensorBoard callback traces
    `model.train_function` for the graph it writes, so the loop puts its step there.
    """
    model.train_function = function


# EarlyStopping keeps its decision in attributes Keras documents only in its source:
# a resumed run replays its past epochs into them and reads them back.

def early_stopping_best_epoch(callback):
    """The 0-based epoch of the best monitored value so far."""
    return callback.best_epoch


def early_stopping_best_weights(callback):
    """The weights of the best epoch (with `restore_best_weights`), or None."""
    return callback.best_weights


def set_early_stopping_best_weights(callback, weights):
    callback.best_weights = weights


def early_stopping_stopped_epoch(callback):
    """The 0-based epoch at which the callback stopped training; 0 while it has not."""
    return callback.stopped_epoch
