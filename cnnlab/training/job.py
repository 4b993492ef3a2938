"""One training, set up: the config (its `auto` values resolved), the compiled model, the data, preprocessing, strategy.

Everything here happens before a run folder exists, so whatever can be wrong with a config
or its data is found while nothing has been written. The TrainingJob it returns travels as
one object through training (train.py), the loops (tf_loop.py, keras_fit.py) and the run's
records (records.py), instead of five loose arguments.
"""

import math
from dataclasses import dataclass, replace

import keras

from cnnlab.config.experiment import with_learning_rate, with_train_values
from cnnlab.config.schema import ExperimentConfig
from cnnlab.data import sources as data
from cnnlab.data.arrays import DataSplits
from cnnlab.data.preprocessing import Preprocessing, check_input_shape, preprocessing_for
from cnnlab.errors import ConfigError
from cnnlab.model import builder, schedules
from cnnlab.runtime import backend
from cnnlab.runtime.cores import usable_cores
from cnnlab.tracking import mlflow as tracking, tensorboard as tensorboard_logs
from cnnlab.training import distribute, keras_fit


@dataclass(frozen=True)
class TrainingJob:
    config: ExperimentConfig
    model: keras.Model
    splits: DataSplits
    prep: Preprocessing
    strategy: object = None  # a tf.distribute strategy, or None for one device (and on JAX and PyTorch)
    class_weight: dict | None = None  # train.class_weight as {class index: weight}, as Keras' fit takes it

    def with_train(self, **values):
        """The same job with `train` values replaced in its config (and its YAML), as a run records what `auto` became."""
        return replace(self, config=with_train_values(self.config, **values))


def set_up(config):
    """Everything before a run folder is written: threads, strategy, data and model, and the numbers `auto` became.

    Returns the TrainingJob whose config holds those numbers.

    The threads come first: TensorFlow fixes them at its first operation. The returned
    config holds `train.batch_parts` and `train.steps_per_execution` as numbers, which the
    run writes into its config.yaml, so that file (and a resume) trains the same way.
    On JAX and PyTorch (Keras' `fit`, cnnlab/training/keras_fit.py) both are 1 unless configured.
    """
    keras_fit.check_supported(config, backend.name())
    if backend.is_tensorflow():
        from cnnlab.training import tf_loop as loop  # TensorFlow's own loop: imported only where TensorFlow is the backend

        parts = loop.resolve_batch_parts(config)
    else:
        parts = 1
    backend.share_cores(usable_cores(), parts)
    strategy = distribute.make_strategy(config.distribution) if backend.is_tensorflow() else None
    if config.distribution.strategy == "data_parallel":
        keras_fit.data_parallel()
    job = prepare(config, strategy)
    steps = resolve_steps(config, job.model, len(job.splits.x_train))
    return job.with_train(batch_parts=parts, steps_per_execution=steps)


def resolve_steps(config, model, num_train):
    """train.steps_per_execution as a number (`auto`: from the model's size, see loop.steps_per_execution;
    one batch a call under a tf.distribute strategy, Keras' default for `fit`, and where TensorBoard logs
    batch-level steps: Keras' `update_freq` counts calls, which are then batches, as its documentation says)."""
    if config.train.steps_per_execution != "auto":
        return config.train.steps_per_execution
    if (config.distribution.strategy != "default" or not backend.is_tensorflow()
            or tensorboard_logs.batch_level(config.train.callbacks["tensorboard"])):
        return 1
    from cnnlab.training import tf_loop as loop

    return loop.steps_per_execution(model, config.train.batch_size, math.ceil(num_train / config.train.batch_size))


def prepare(config, strategy=None):
    """Seeds, loads the data and builds the compiled model, checking that they fit together: a TrainingJob.

    With a tf.distribute `strategy` the model is built and compiled in its scope,
    so its variables are mirrored on every replica.
    """
    tracking.check_installed(config)
    keras.utils.set_random_seed(config.seed)
    splits = data.load_dataset(config.data, config.train.validation_split, config.seed, config.train.fold)
    config = with_schedule_steps(config, math.ceil(len(splits.x_train) / config.train.batch_size))
    prep = preprocessing_for(config.data)
    check_input_shape(prep, splits.x_train.shape[1:], config.model.input_shape)
    check_global_batch(config, distribute.num_replicas(strategy) * keras_fit.replicas(config))
    model = build_compiled(config, strategy)
    check_output_units(model, len(splits.class_names), config)
    return TrainingJob(config=config, model=model, splits=splits, prep=prep, strategy=strategy,
                       class_weight=class_weights(config.train.class_weight, splits.y_train, splits.class_names))


def build_compiled(config, strategy=None):
    """The config's model, built and compiled under its precision policy (and in the strategy's scope): a fresh optimizer."""
    as_written = "true" if config.raw.get("mixed_precision") is True else None
    with distribute.precision_policy(config.mixed_precision, as_written), distribute.scope(strategy):
        model = builder.validate(output_in_float32(config) if config.mixed_precision else config)
        distribute.scale_learning_rate(model, config.distribution, strategy)
    return model


def class_weights(setting, labels, class_names):
    """train.class_weight as {class index: weight}: `balanced` is scikit-learn's n_samples / (n_classes × count),
    over the classes the training split holds; a class the setting leaves out weighs 1, as in Keras' fit."""
    if setting is None:
        return None
    if setting == "balanced":
        import numpy as np
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = compute_class_weight("balanced", classes=present, y=labels)
        return {int(index): float(weight) for index, weight in zip(present, weights)}
    names = [str(name) for name in class_names]
    resolved = {}
    for key, weight in setting.items():
        if isinstance(key, int) and 0 <= key < len(names):
            index = key
        elif isinstance(key, str) and key in names:
            index = names.index(key)
        else:
            raise ConfigError(f"train.class_weight.{key}", f"is not a class of this data; its classes are {', '.join(names)} "
                              f"(or their indices 0 to {len(names) - 1})")
        resolved[index] = float(weight)
    return resolved


def with_schedule_steps(config, steps_per_epoch):
    """A schedule whose length the config leaves to cnnlab (OneCycle's total_steps) spans train.epochs of this data;
    the number goes into the run's config.yaml, so that a resume or a re-run schedules alike."""
    rate = config.compile.optimizer.kwargs.get("learning_rate")
    if not schedules.is_schedule(rate):
        return config
    filled = schedules.with_derived_steps(rate, config.train.epochs * steps_per_epoch)
    return config if filled is rate else with_learning_rate(config, filled)


def output_in_float32(config):
    """Mixed precision keeps the last layer in float32, so softmax and loss do not lose precision or overflow."""
    last = config.model.layers[-1]
    kwargs = {"dtype": "float32", **last.kwargs}
    layers = config.model.layers[:-1] + (replace(last, kwargs=kwargs),)
    return replace(config, model=replace(config.model, layers=layers))


def check_global_batch(config, replicas):
    if config.train.batch_size < replicas:
        raise ConfigError("train.batch_size", f"is the global batch, split across {replicas} replicas; "
                          f"it must be at least {replicas}, received {config.train.batch_size}")


def check_output_units(model, num_classes, config):
    if len(model.output_shape) != 2:  # a Dense on feature maps keeps their height and width: the loss fails mid-training
        hint = "model.backbone.pooling: avg, or " if config.model.backbone is not None else ""
        raise ConfigError(config.model.layers[-1].path, f"the model outputs shape {tuple(model.output_shape)}, not one vector per image; "
                          f"add {hint}Flatten or GlobalAveragePooling2D before the last layer")
    units = model.output_shape[-1]
    if config.compile.loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and units != num_classes:
        last = config.model.layers[-1].path
        raise ConfigError(last, f"the model outputs {units} values but the data has {num_classes} classes; set the last layer's units to {num_classes}")
