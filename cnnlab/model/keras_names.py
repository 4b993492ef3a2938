"""Names in a config → Keras classes, through Keras' own public modules only.

A config can name any public Keras layer, optimizer, loss or metric, and nothing
else: no dotted Python paths, no `Lambda` (it runs arbitrary code), no custom
objects. Every miss lists what exists and the closest match, and every keyword
argument is checked against the class signature before anything is built, so a
typo is reported at its config path instead of deep inside Keras.
"""

import difflib
import inspect
import re
from functools import lru_cache

from cnnlab.errors import ConfigError, one_line, short_repr, suggest

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# Layers that execute user-supplied Python or exist only as base classes.
REFUSED_LAYERS = {"Lambda", "Layer", "InputLayer", "InputSpec", "TFSMLayer", "Wrapper", "RNN"}

# What model.augmentation may hold: Keras' random image preprocessing layers that change each image on its
# own in training and pass it through unchanged otherwise (evaluate, predict), keeping its shape.
# Left out: RandomCrop (crops at inference too), MixUp and CutMix (MIXING_LAYERS, below: they mix labels too), and the deterministic ones (Resizing, AutoContrast, Equalization, ...). tests/test_photos.py
# checks that every one of these is the identity at inference.
AUGMENTATION_LAYERS = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear", "RandomPerspective",
    "RandomElasticTransform", "RandomContrast", "RandomBrightness", "RandomSaturation", "RandomHue",
    "RandomColorJitter", "RandomColorDegeneration", "RandomGrayscale", "RandomSharpness", "RandomGaussianBlur",
    "RandomInvert", "RandomPosterization", "RandomErasing", "Solarization", "RandAugment", "AugMix",
)

# model.augmentation's layers that mix pairs of images and their labels across a batch: not part of the model, they act
# on training batches in the data pipeline, with one-hot labels (cnnlab/model/mixing.py)
MIXING_LAYERS = ("MixUp", "CutMix")

# Augmentation arguments that Keras takes without checking, where a typo would quietly change training:
# RandomFlip with any other mode flips nothing (Keras 3.15; its other layers refuse an unknown mode themselves).
UNCHECKED_CHOICES = {"RandomFlip": {"mode": ("horizontal", "vertical", "horizontal_and_vertical")}}

# Callback keyword arguments that cnnlab decides itself (file locations inside the run folder).
RESERVED_CALLBACK_ARGS = {"checkpoint": {"filepath"}, "tensorboard": {"log_dir"}}

# Arguments of keras.applications constructors that cnnlab sets itself, and why.
RESERVED_BACKBONE_ARGS = {
    "include_top": "is always false: the head is model.layers",
    "classes": "belongs to the top that cnnlab leaves out: the last layer of model.layers gives the classes",
    "classifier_activation": "belongs to the top that cnnlab leaves out: give the last layer of model.layers its activation",
    "input_shape": "comes from model.input_shape",
    "input_tensor": "is the model's input, made by cnnlab from model.input_shape",
    "include_preprocessing": "is always true: the family's own preprocessing is part of the model",
}

OPTIMIZER_ALIASES = {"sgd": "SGD", "rmsprop": "RMSprop", "adamw": "AdamW", "adam": "Adam", "nadam": "Nadam",
                     "adagrad": "Adagrad", "adadelta": "Adadelta", "adamax": "Adamax", "ftrl": "Ftrl",
                     "lion": "Lion", "lamb": "Lamb", "adafactor": "Adafactor"}


@lru_cache(maxsize=None)
def layer_classes():
    import keras

    return {
        name: cls
        for name in dir(keras.layers)
        if not name.startswith("_") and name not in REFUSED_LAYERS
        for cls in [getattr(keras.layers, name)]
        if inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)
    }


@lru_cache(maxsize=None)
def optimizer_classes():
    import keras

    available = {name: getattr(keras.optimizers, name, None) for name in OPTIMIZER_ALIASES.values()}
    return {alias: available[cls_name] for alias, cls_name in OPTIMIZER_ALIASES.items() if available[cls_name]}


@lru_cache(maxsize=None)
def backbone_constructors():
    """keras.applications' public model constructors by name: MobileNetV2, EfficientNetB0, ResNet50, ..."""
    import keras

    return {name: fn for name in dir(keras.applications) if name[:1].isupper()
            for fn in [getattr(keras.applications, name)] if callable(fn)}


@lru_cache(maxsize=None)
def loss_names():
    import keras

    return sorted(n for n in dir(keras.losses) if n.islower() and not n.startswith("_") and n not in ("get", "serialize", "deserialize"))


@lru_cache(maxsize=None)
def metric_names():
    import keras

    functions = [n for n in dir(keras.metrics) if n.islower() and not n.startswith("_") and n not in ("get", "serialize", "deserialize")]
    return sorted(set(functions) | {"accuracy", "acc", "crossentropy", "ce"})


@lru_cache(maxsize=None)
def callback_classes():
    import keras

    cb = keras.callbacks
    return {"checkpoint": cb.ModelCheckpoint, "early_stopping": cb.EarlyStopping,
            "reduce_lr": cb.ReduceLROnPlateau, "tensorboard": cb.TensorBoard}


def lookup(name, table, path, what, limit=30):
    """The entry for `name`, or a ConfigError listing the valid names (all of them up to `limit`) and the closest one."""
    if isinstance(name, str) and name in table:
        return table[name]
    if isinstance(name, str) and "." in name:
        raise ConfigError(path, f"{what} must be named by its Keras name, not a Python path; received {short_repr(name)}")
    refused = " Lambda layers and custom objects are not allowed in configs." if name in REFUSED_LAYERS else ""
    raise ConfigError(path, f"unknown {what} {short_repr(name)}.{refused} {valid_names_hint(str(name), table, limit)}")


def valid_names_hint(name, table, limit=30):
    """Short tables are listed whole; long ones (160 Keras layers) by their closest matches, to keep one line."""
    close = difflib.get_close_matches(name, list(table), n=1 if len(table) <= limit else 5, cutoff=0.6 if len(table) <= limit else 0.4)
    if len(table) <= limit:
        hint = f"Did you mean {close[0]}? " if close else ""
        return f"{hint}Valid names: {', '.join(sorted(table))}"
    near = f"Closest: {', '.join(close)}. " if close else ""
    return f"{near}Valid names: any of the {len(table)} public classes of keras.layers, spelled as Keras spells them"


def check_kwargs(cls, kwargs, path, reserved=()):
    """Rejects keyword arguments the class does not accept, by the names in its signature."""
    params = accepted_params(cls)
    for key in kwargs:
        if key in reserved:
            raise ConfigError(f"{path}.{key}", "is set by cnnlab (files live in the run folder); remove it")
        if key not in params:
            raise ConfigError(f"{path}.{key}", f"unknown argument of {cls.__name__}{suggest(key, sorted(params))}; valid arguments: {', '.join(sorted(params))}")


@lru_cache(maxsize=None)
def accepted_params(cls):
    """Named parameters of `cls.__init__` and of the base classes its `**kwargs` reach (e.g. Layer's `name`, `dtype`);
    of a function (keras.applications' constructors), its own."""
    if not inspect.isclass(cls):
        params = inspect.signature(cls).parameters.values()
        return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return frozenset(names)


def layer_class(spec):
    index_path = spec.path[: -len(spec.type) - 1]  # "model.layers[3]" without the class name
    cls = lookup(spec.type, layer_classes(), index_path, "Keras layer")
    check_kwargs(cls, spec.kwargs, spec.path)
    return cls


def backbone_constructor(backbone):
    """The keras.applications constructor named by `model.backbone`, its arguments checked against its signature."""
    table = backbone_constructors()
    fn = lookup(backbone.name, table, "model.backbone.name", "keras.applications model", limit=len(table))
    valid = sorted((accepted_params(fn) - set(RESERVED_BACKBONE_ARGS)) | {"name", "trainable"})
    for key in backbone.kwargs:
        if key in RESERVED_BACKBONE_ARGS:
            raise ConfigError(f"model.backbone.{key}", f"{RESERVED_BACKBONE_ARGS[key]}; remove it here")
        if key not in valid:
            raise ConfigError(f"model.backbone.{key}", f"unknown argument of keras.applications.{backbone.name}{suggest(key, valid)}; valid arguments: {', '.join(valid)}")
    return fn


def augmentation_class(spec):
    """A model.augmentation entry's class: one of AUGMENTATION_LAYERS that this Keras has, its arguments checked."""
    index_path = spec.path[: -len(spec.type) - 1]
    allowed = augmentation_classes()
    if spec.type not in allowed:
        elsewhere = " (put it in model.layers)" if spec.type in layer_classes() else ""
        raise ConfigError(index_path, f"{short_repr(spec.type)} cannot be an augmentation layer{elsewhere}: model.augmentation takes "
                          f"Keras' random preprocessing layers, which act in training only. {valid_names_hint(str(spec.type), allowed)}")
    check_kwargs(allowed[spec.type], spec.kwargs, spec.path)
    for argument, choices in UNCHECKED_CHOICES.get(spec.type, {}).items():
        value = spec.kwargs.get(argument, choices[0])
        if value not in choices:
            raise ConfigError(f"{spec.path}.{argument}", f"expected one of {', '.join(choices)}{suggest(str(value), choices)}, "
                              f"received {short_repr(value)}; {spec.type} with any other {argument} would do nothing")
    return allowed[spec.type]


@lru_cache(maxsize=None)
def augmentation_classes():
    return {name: layer_classes()[name] for name in AUGMENTATION_LAYERS + MIXING_LAYERS if name in layer_classes()}


def optimizer_class(opt_config):
    name = opt_config.name.lower() if isinstance(opt_config.name, str) else opt_config.name
    cls = lookup(name, optimizer_classes(), "compile.optimizer.name", "optimizer")
    check_kwargs(cls, opt_config.kwargs, "compile.optimizer")
    return cls


def check_loss(name):
    if name not in loss_names():
        lookup(name, dict.fromkeys(loss_names()), "compile.loss", "loss")
    return name


def check_metrics(names):
    for i, name in enumerate(names):
        if name not in metric_names():
            lookup(name, dict.fromkeys(metric_names()), f"compile.metrics[{i}]", "metric")
    return names


def callback_class(name, kwargs):
    cls = callback_classes()[name]
    check_kwargs(cls, kwargs, f"train.callbacks.{name}", reserved=RESERVED_CALLBACK_ARGS.get(name, ()))
    return cls


def snake_case(class_name):
    """Keras' own rule: Conv2D → conv2d, MaxPooling2D → max_pooling2d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def floats_where_expected(cls, kwargs):
    """YAML reads `learning_rate: 1` as an int, which Keras refuses; where Keras' default is a float, so is the value."""
    params = inspect.signature(cls.__init__).parameters
    return {key: float(value) if isinstance(value, int) and not isinstance(value, bool) and key in params
            and isinstance(params[key].default, float) else value for key, value in kwargs.items()}


def narrow_path(path, kwargs, exc):
    """Narrows the error path to the keyword argument the Keras message mentions, by name or by value."""
    text = str(exc)
    by_name = [key for key in kwargs if f"`{key}`" in text or f"{key}=" in text or f"'{key}'" in text]
    by_value = [key for key, value in kwargs.items() if isinstance(value, str) and len(value) > 1 and value in text]
    mentioned = by_name or by_value
    return f"{path}.{mentioned[0]}" if len(mentioned) == 1 else path


def keras_message(exc):
    """Keras errors run over several lines with tracebacks of their own; keep the first sentence-bearing line."""
    plain = ANSI_ESCAPE.sub("", str(exc))
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    message = one_line(lines[0])
    if message.startswith("Exception encountered when calling") and len(lines) > 1:
        message = one_line(lines[1])
    return message[:300]
