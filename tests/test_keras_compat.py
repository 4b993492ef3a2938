"""The private parts of Keras and TensorFlow that cnnlab relies on (cnnlab/runtime/keras_compat.py) are still there.

Each test fails with a message that says what changed and what in cnnlab depends on it,
so a Keras or TensorFlow release that moves one shows up here first.
"""

import inspect
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnlab.runtime import keras_compat

VERSIONS = f"Keras {keras.__version__}, TensorFlow {tf.__version__}"


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def tiny_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, size=32)


def test_the_loss_tracker_is_what_fit_logs_as_loss():
    model = tiny_model()
    x, y = tiny_data()
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    tracker = keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean), (
        f"{VERSIONS}: model._loss_tracker is no longer a keras.metrics.Mean; loop.train_step_on_parts logs the loss through it")
    assert float(tracker.result()) == pytest.approx(history.history["loss"][-1]), (
        f"{VERSIONS}: model._loss_tracker no longer holds what fit logs as loss; split batches would log another loss")


def test_symbolic_build_from_a_spec_builds_the_metrics_and_peeking_can_be_switched_off():
    assert "data_batch" in inspect.signature(keras.Model._symbolic_build).parameters, (
        f"{VERSIONS}: Model._symbolic_build(data_batch=...) is gone; distribute.build_without_peeking needs another way")
    assert hasattr(keras.Model, "_maybe_symbolic_build"), (
        f"{VERSIONS}: Model._maybe_symbolic_build is gone; check whether fit still peeks at a batch under a strategy")
    model = tiny_model()
    spec = (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int64))
    keras_compat.build_from_spec(model, spec, tf.distribute.get_strategy())
    compiled = [metric for metric in model.metrics if isinstance(metric, keras.src.trainers.compile_utils.CompileMetrics)]
    assert model.optimizer.built and compiled and all(metric.built for metric in compiled), (
        f"{VERSIONS}: _symbolic_build no longer builds the optimizer and metrics from a spec")
    x, y = tiny_data()
    model.fit(x, y, epochs=1, verbose=0)  # and fit still trains without its own peek


def test_the_learning_rate_schedule_is_found_behind_the_optimizer():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert keras_compat.has_schedule(keras.optimizers.SGD(learning_rate=schedule)), (
        f"{VERSIONS}: optimizer._learning_rate no longer holds the schedule; scale_learning_rate would scale a schedule")
    assert not keras_compat.has_schedule(keras.optimizers.SGD(learning_rate=0.1))


def test_inbound_layers_name_the_layers_that_feed_a_layer():
    inputs = keras.Input((4,), name="pixels")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    names = [node.operation.name for node in keras_compat.inbound_layers(model.get_layer("out"))]
    assert names == ["hidden"], f"{VERSIONS}: layer._inbound_nodes[0].parent_nodes changed; visualize's architecture.txt lists inputs with it"


def test_backup_and_restore_writes_the_files_cnnlab_reads(tmp_path):
    model = tiny_model()
    x, y = tiny_data()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path), double_checkpoint=True, delete_checkpoint=False)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[backup])
    names = {path.name for path in tmp_path.iterdir()}
    expected = {keras_compat.BACKUP_METADATA, keras_compat.BACKUP_WEIGHTS}
    assert expected | {f"{name}.bkp" for name in expected} <= names, (
        f"{VERSIONS}: BackupAndRestore now writes {sorted(names)}; runs.backup_epoch reads {sorted(expected)} and their .bkp copies")
    assert json.loads((tmp_path / keras_compat.BACKUP_METADATA).read_text())["epoch"] == 2, (
        f"{VERSIONS}: BackupAndRestore's metadata no longer counts completed epochs under 'epoch'")


def test_multi_worker_mode_is_readable_from_a_strategy():
    assert keras_compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"])) is False, (
        f"{VERSIONS}: strategy.extended._in_multi_worker_mode() changed; distribute.is_chief uses it")


def test_keras_reduces_per_replica_logs_where_cnnlab_patches_it():
    from keras.src.backend.tensorflow import trainer

    missing = [name for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker", "_is_per_replica_instance")
               if not hasattr(trainer, name)]
    assert not missing, f"{VERSIONS}: keras.src.backend.tensorflow.trainer lacks {missing}; see keras_compat.reduce_scalar_logs_across_workers"
    assert list(inspect.signature(trainer.reduce_per_replica).parameters) == ["values", "strategy", "reduction"], (
        f"{VERSIONS}: reduce_per_replica's arguments changed; the multi-worker patch would pass the wrong ones")
    keras_compat.reduce_scalar_logs_across_workers()
    keras_compat.reduce_scalar_logs_across_workers()  # idempotent
    assert trainer.reduce_per_replica.cnnlab_patched
    value = tf.constant(2.5)
    assert float(trainer.reduce_per_replica(value, tf.distribute.get_strategy(), "auto")) == 2.5  # single device: unchanged


def test_the_random_layers_generator_states_are_found_and_are_not_among_the_weights():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.5), keras.layers.GaussianNoise(0.1)])
    states = keras_compat.random_states(model)
    assert len(states) == 2, f"{VERSIONS}: the seed generators' state variables are no longer found by their path; resumed Dropout masks would differ"
    before = [keras.ops.convert_to_numpy(state).copy() for state in states]
    model(np.ones((2, 4), "float32"), training=True)
    assert any((keras.ops.convert_to_numpy(state) != old).any() for state, old in zip(states, before)), (
        f"{VERSIONS}: drawing a Dropout mask no longer advances the generator state cnnlab saves")
    assert not any(state.path in {weight.path for weight in model.weights} for state in states), (
        f"{VERSIONS}: the generator states are now weights; BackupAndRestore may save them itself (callbacks.RandomState could go)")


def test_keras_applications_ask_file_utils_get_file_for_their_imagenet_weights():
    asked = []

    class Asked(Exception):
        pass

    def get_file(original, fname, origin, **kwargs):
        asked.append((fname, origin, kwargs.get("cache_subdir")))
        raise Asked

    with keras_compat.applications_get_file(get_file), pytest.raises(Asked):
        keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights="imagenet")
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    assert asked == [(name, f"https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/{name}", "models")], (
        f"{VERSIONS}: keras.applications no longer fetch their weights through keras.src.utils.file_utils.get_file(name, url, "
        f"cache_subdir='models'); backbones.CachedWeights cannot find them in the Keras cache or name the missing file: {asked}")
    from keras.src.utils import file_utils

    assert file_utils.get_file.__module__ == "keras.src.utils.file_utils", "applications_get_file must put Keras' own get_file back"


def test_tensorboard_callbacks_writers_and_batch_counter_are_where_cnnlab_continues_them(tmp_path):
    model = tiny_model()
    model.fit(*tiny_data(), batch_size=16, epochs=1, verbose=0)  # built, as the callback meets it in fit
    callback = keras.callbacks.TensorBoard(log_dir=str(tmp_path), update_freq=1)
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": 2, "verbose": 0})
    callback.on_train_begin()
    keras_compat.set_tensorboard_train_step(callback, 7)
    assert callback._global_train_batch == 7, (
        f"{VERSIONS}: TensorBoard no longer counts batches in _global_train_batch; a resumed run's batch steps restart at 0")
    callback.on_test_begin()
    writer = keras_compat.tensorboard_validation_writer(callback)
    with writer.as_default():
        tf.summary.scalar("probe", 1.0, step=1)
    assert isinstance(writer, tf.summary.SummaryWriter), (
        f"{VERSIONS}: TensorBoard's _val_writer is gone; RunTensorBoard.on_test_end cannot write its evaluation curve")
    writers = keras_compat.tensorboard_writers(callback)
    assert len(writers) == 2 and writer in writers, (
        f"{VERSIONS}: TensorBoard's _writers no longer holds its train and validation writers; RunTensorBoard cannot flush each epoch")
    pushed = len(callback._prev_summary_state)
    keras_compat.pop_tensorboard_writer(callback)  # what on_test_end does after writing the evaluation curve
    assert len(callback._prev_summary_state) == pushed - 1, (
        f"{VERSIONS}: TensorBoard's _pop_writer no longer takes back one default writer")
    keras_compat.close_tensorboard(callback)
    assert keras_compat.tensorboard_writers(callback) == [] and not callback._prev_summary_state, (
        f"{VERSIONS}: TensorBoard's _close_writers/_prev_summary_state changed; an interrupted run keeps its event files open")
    assert list(tmp_path.glob("validation/*tfevents*")), f"{VERSIONS}: the validation writer wrote no event file"


def test_the_training_step_callbacks_trace_is_model_train_function():
    model = tiny_model()
    x, y = tiny_data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)

    def step(iterator):
        return model.train_function(iterator)

    keras_compat.set_train_function(model, step)
    assert model.train_function is step, f"{VERSIONS}: model.train_function can no longer be set"
    assert "train_function" in inspect.getsource(keras.callbacks.TensorBoard), (
        f"{VERSIONS}: Keras' TensorBoard no longer traces model.train_function; the TensorFlow loop's graph would be missing")


def test_early_stopping_keeps_its_best_epoch_weights_and_stopped_epoch_where_a_resume_replays_them():
    model = tiny_model()
    callback = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, val_loss in enumerate([0.5, 0.4, 0.6, 0.7]):
        callback.on_epoch_end(epoch, {"val_loss": val_loss})
        if model.stop_training:
            break
    assert keras_compat.early_stopping_best_epoch(callback) == 1, (
        f"{VERSIONS}: EarlyStopping.best_epoch no longer holds the best epoch; resumed runs lose their best weights")
    assert keras_compat.early_stopping_stopped_epoch(callback) == 2, (
        f"{VERSIONS}: EarlyStopping.stopped_epoch changed; fine-tuning would start after an early stop")
    weights = keras_compat.early_stopping_best_weights(callback)
    assert weights is not None and len(weights) == len(model.get_weights()), (
        f"{VERSIONS}: EarlyStopping.best_weights no longer holds the best epoch's weights")
    keras_compat.set_early_stopping_best_weights(callback, None)
    assert keras_compat.early_stopping_best_weights(callback) is None
