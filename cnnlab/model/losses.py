"""`compile.loss` as Keras takes it: a name, or `{name: ..., argument: value}` made into that loss's Keras class.

cnnlab's data always carry class indices (sparse labels). A categorical cross-entropy,
the loss that takes label smoothing, wants one-hot labels: OneHotCrossentropy makes them
inside the loss, so a config asks for `{name: categorical_crossentropy, label_smoothing: 0.1}`
(or the same under sparse_categorical_crossentropy, which has no label_smoothing in Keras)
without rewriting its data.
"""

import keras

from cnnlab.errors import ConfigError
from cnnlab.model import keras_names as registry

PATH = "compile.loss"
# The names under which OneHotCrossentropy stands in: with sparse labels, Keras' categorical_crossentropy would fail
CATEGORICAL = ("categorical_crossentropy", "sparse_categorical_crossentropy")


@keras.saving.register_keras_serializable(package="cnnlab")
class OneHotCrossentropy(keras.losses.Loss):
    """Keras' categorical cross-entropy (label smoothing included) on class indices, made one-hot here; labels that
    are already one-hot or soft pass as they are. Registered, so best.keras loads with its compile state."""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = from_logits
        self.label_smoothing = float(label_smoothing)
        self.axis = axis

    def call(self, y_true, y_pred):
        if len(y_true.shape) < len(y_pred.shape):
            y_true = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "axis": self.axis}


def make_loss(name, kwargs):
    """What compile() gets for compile.loss: Keras' name where it can take it, else an instance of the loss's class."""
    name = registry.check_loss(name)
    if name == "categorical_crossentropy" or (name in CATEGORICAL and kwargs):
        cls = OneHotCrossentropy
    elif not kwargs:
        return name
    else:
        cls = loss_class(name)
    registry.check_kwargs(keras.losses.CategoricalCrossentropy if cls is OneHotCrossentropy else cls, kwargs or {}, PATH)
    try:
        return cls(**(kwargs or {}))
    except Exception as exc:  # any failure to construct from config values is the config's fault
        raise ConfigError(registry.narrow_path(PATH, kwargs or {}, exc), registry.keras_message(exc)) from exc


def loss_class(name):
    """The keras.losses class of a loss function's name: categorical_focal_crossentropy → CategoricalFocalCrossentropy."""
    classes = {registry.snake_case(cls_name): getattr(keras.losses, cls_name) for cls_name in dir(keras.losses) if cls_name[:1].isupper()}
    if name not in classes:
        raise ConfigError(PATH, f"{name} takes no arguments in a config; give it as a bare name")
    return classes[name]
