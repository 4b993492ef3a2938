"""MixUp and CutMix in model.augmentation: Keras' own layers, which mix pairs of (image, label) across a batch.

Unlike the other augmentation layers they cannot live inside the model: they need the
labels, and they make them soft. So the model is built without them, and the training
batches pass through them (cnnlab/training/keras_fit.py's batches, cnnlab/training/tf_loop.py's
compiled step), their class indices made one-hot first. Validation, evaluate and predict see
plain images and class indices. Both kinds of label must then give the same numbers: the loss
is OneHotCrossentropy (one-hot where the labels are indices, as they are where they are soft),
and `accuracy` becomes SoftLabelAccuracy, the argmax of a soft label against the prediction's.
"""

import keras

from cnnlab.errors import ConfigError
from cnnlab.model import keras_names as registry
from cnnlab.model.keras_names import MIXING_LAYERS

PLAIN_ACCURACY = ("accuracy", "acc")  # the names Keras would resolve by the first batch's labels: soft or indices


def mixing_specs(config):
    """The model.augmentation entries that mix batches (MixUp, CutMix), in their order."""
    return tuple(spec for spec in config.model.augmentation if spec.type in MIXING_LAYERS)


def check_mixing(config):
    """Mixing needs a cross-entropy that takes soft labels, and one device (the data paths that carry it)."""
    specs = mixing_specs(config)
    if not specs:
        return
    where = specs[0].path[: -len(specs[0].type) - 1]
    if config.compile.loss not in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        raise ConfigError(where, f"{specs[0].type} mixes labels, which then need compile.loss categorical_crossentropy "
                          f"(or sparse_categorical_crossentropy), received {config.compile.loss}")
    if config.distribution.strategy != "default":
        raise ConfigError(where, f"{specs[0].type} runs on one device only (distribution.strategy default), "
                          f"received strategy {config.distribution.strategy}")


def make_mixing_layers(config):
    """The configured MixUp and CutMix layers, seeded with the config's seed unless they give their own."""
    layers = []
    for spec in mixing_specs(config):
        cls = registry.augmentation_class(spec)
        kwargs = {"seed": config.seed, **spec.kwargs}
        try:
            layers.append(cls(**kwargs))
        except Exception as exc:  # any failure to construct from config values is the config's fault
            raise ConfigError(registry.narrow_path(spec.path, kwargs, exc), registry.keras_message(exc)) from exc
    return layers


def mix_batch(layers, images, labels, num_classes):
    """A training batch with its labels one-hot, then mixed by each layer in turn: (images, soft labels)."""
    if not layers:
        return images, labels
    soft = keras.ops.one_hot(keras.ops.cast(labels, "int32"), num_classes, dtype="float32")
    data = {"images": keras.ops.cast(images, "float32"), "labels": soft}
    for layer in layers:
        data = layer(data, training=True)
    return data["images"], data["labels"]


def metrics_for(config, metrics):
    """The compiled metrics: with mixing, plain accuracy is SoftLabelAccuracy, right for soft labels and indices alike."""
    if not mixing_specs(config):
        return metrics
    return [SoftLabelAccuracy() if name in PLAIN_ACCURACY else name for name in metrics]


@keras.saving.register_keras_serializable(package="cnnlab")
class SoftLabelAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy where labels are class indices or soft (mixed) vectors: a soft label's class is its argmax.
    Logged as `accuracy`, as Keras logs the plain accuracy it replaces."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=soft_label_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def soft_label_accuracy(y_true, y_pred):
    if len(y_true.shape) == len(y_pred.shape):
        y_true = keras.ops.argmax(y_true, axis=-1)
    return keras.metrics.sparse_categorical_accuracy(keras.ops.reshape(y_true, (-1,)), y_pred)
