"""Config → compiled `keras.Model`. Pure: builds objects, and reads no file but a backbone's weights."""

from cnnlab.model import backbones, keras_names as registry, losses, mixing
from cnnlab.model.keras_names import floats_where_expected, keras_message, narrow_path, snake_case
from cnnlab.runtime import backend, keras_compat
from cnnlab.errors import ConfigError

MAX_LAYER_INT = 65_536


def build_model(config):
    """Chains the configured layers on `model.input_shape` with the functional API.

    Each layer is called on the previous output one at a time, so a layer that
    cannot take its input (too many poolings, a Dense before Flatten where shapes
    clash) is reported at its own config path.
    """
    import keras

    inputs = keras.Input(shape=config.model.input_shape, name="image")
    augmentation, layers = config.model.augmentation, config.model.layers
    # MixUp and CutMix act on training batches, outside the model (cnnlab/model/mixing.py)
    augmentation = tuple(spec for spec in augmentation if spec not in mixing.mixing_specs(config))
    names = layer_names(augmentation + layers)  # one numbering, so a class in both lists gets two names
    x = inputs
    for spec, name in zip(augmentation, names):
        x = call_layer(make_augmentation_layer(spec, name, config.data.rescale), x, spec)
    if config.model.backbone is not None:
        x = apply_backbone(x, config.model.backbone, config.model.input_shape)
    for spec, name in zip(layers, names[len(augmentation):]):
        layer = make_layer(spec, name)
        x = call_layer(layer, x, spec)
    try:
        return keras.Model(inputs, x, name=config.name)
    except Exception as exc:  # e.g. two layers given the same `name`
        raise ConfigError("model.layers", keras_message(exc)) from exc


def apply_backbone(x, backbone, input_shape):
    """The backbone stage: the family's preprocess_input as layers, then the keras.applications model without its top.

    A frozen backbone is called with training=False, as the Keras transfer-learning guide
    does: its BatchNormalization layers then stay in inference mode, keeping the statistics
    they came with, also once fine-tuning makes some of its layers trainable. A trainable
    backbone (trainable: true) is called like any layer, its BatchNormalization training too.
    """
    constructor = registry.backbone_constructor(backbone)
    x = backbones.apply_preprocess_input(x, constructor)
    model = make_backbone(constructor, backbone, input_shape)
    model.trainable = backbone.trainable
    return model(x) if backbone.trainable else model(x, training=False)


def make_backbone(constructor, backbone, input_shape):
    """Calls the keras.applications constructor, its weights loaded; any failure is one line at the config path it concerns."""
    weights = backbones.weights_argument(backbone)
    cached = backbones.CachedWeights(backbone.name)
    try:
        with keras_compat.applications_get_file(cached):
            return constructor(include_top=False, weights=weights, input_shape=tuple(input_shape), **backbone.kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        message = keras_message(exc)
        path = backbones.error_path(backbone, message)
        loaded = cached.file or (weights if weights != backbones.IMAGENET else None)
        if path == "model.backbone" and loaded:
            path, message = backbones.WEIGHTS_PATH, f"cannot load {loaded} into {backbone.name}: {message}"
        raise ConfigError(path, message) from exc


def find_backbone(model):
    """The keras.applications model inside a model built with model.backbone, or None."""
    import keras

    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)


def layer_names(specs):
    """conv2d, conv2d_1, ...: the names a fresh Keras session gives, whatever was built before in this process.

    Keras numbers auto-named layers with process-wide counters, so a second model
    would get conv2d_3; stable names keep summaries and `--layer NAME` predictable.
    """
    counts = {}
    names = []
    for spec in specs:
        base = snake_case(spec.type)
        given = spec.kwargs.get("name")
        names.append(given if isinstance(given, str) else base if base not in counts else f"{base}_{counts[base]}")
        counts[base] = counts.get(base, 0) + 1
    return names


def make_layer(spec, name):
    return construct(registry.layer_class(spec), spec, name, spec.kwargs)


def make_augmentation_layer(spec, name, rescale):
    """A model.augmentation layer. Its `value_range`, where it has one, defaults to the range the pixels
    reach the model in, 0 to 255 × data.rescale, instead of Keras' 0 to 255: at 0..1, RandomBrightness
    with Keras' default would add up to `factor` × 255 to every pixel."""
    cls = registry.augmentation_class(spec)
    kwargs = dict(spec.kwargs)
    if "value_range" in registry.accepted_params(cls) and "value_range" not in kwargs:
        kwargs["value_range"] = (0.0, 255.0 * rescale)
    return construct(cls, spec, name, kwargs)


def construct(cls, spec, name, kwargs):
    check_sizes(kwargs, spec.path)
    try:
        return cls(**{"name": name, **kwargs})
    except Exception as exc:  # any failure to construct from config values is the config's fault
        raise ConfigError(narrow_path(spec.path, kwargs, exc), keras_message(exc)) from exc


def call_layer(layer, x, spec):
    try:
        return layer(x)
    except Exception as exc:
        raise ConfigError(narrow_path(spec.path, spec.kwargs, exc), f"cannot take its input of shape {tuple(x.shape)}: {keras_message(exc)}") from exc


def check_sizes(kwargs, path):
    """Refuses integer arguments so large that Keras would try to allocate gigabytes before any error.

    `Dense: {units: 10000000000}` is a typo, not a model; without this guard the
    process is killed for memory instead of reporting the line.
    """
    for key, value in kwargs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, int) and not isinstance(item, bool) and item > MAX_LAYER_INT and key != "seed":
                raise ConfigError(f"{path}.{key}", f"{item} is larger than cnnlab allows for a layer argument ({MAX_LAYER_INT:,})")


def compile_model(model, config):
    """Compiles with the configured optimizer, loss and metrics, each checked by name first.

    A numeric train.steps_per_execution goes to Keras too, so that `fit` (under a
    tf.distribute strategy) runs as many batches a call as cnnlab's own loop does. Keras on
    PyTorch takes only 1: a run trained elsewhere with more is evaluated there one batch a call.
    """
    steps = config.train.steps_per_execution
    steps = steps if isinstance(steps, int) and backend.name() != "torch" else 1
    loss = losses.make_loss(config.compile.loss, config.compile.loss_kwargs)
    if mixing.mixing_specs(config) and isinstance(loss, str):  # soft labels in training, class indices elsewhere
        loss = losses.OneHotCrossentropy()
    model.compile(optimizer=make_optimizer(config.compile.optimizer), loss=loss,
                  metrics=mixing.metrics_for(config, list(registry.check_metrics(config.compile.metrics))),
                  steps_per_execution=steps)
    return model


def make_optimizer(opt_config):
    """The configured optimizer; a `learning_rate` mapping is a schedule (cnnlab/model/schedules.py)."""
    from cnnlab.model import schedules

    cls = registry.optimizer_class(opt_config)
    kwargs = floats_where_expected(cls, opt_config.kwargs)
    if schedules.is_schedule(kwargs.get("learning_rate")):
        kwargs["learning_rate"] = schedules.make_schedule(kwargs["learning_rate"])
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ConfigError(narrow_path("compile.optimizer", opt_config.kwargs, exc), keras_message(exc)) from exc


def check_callback_kwargs(config):
    """Validates every enabled callback's arguments against its Keras class, before any training."""
    for name, kwargs in config.train.callbacks.items():
        if kwargs is not None:
            registry.callback_class(name, kwargs)


def validate(config):
    """Everything `cnnlab check` promises: builds and compiles the model, checks callbacks. Returns the model."""
    mixing.check_mixing(config)
    mixing.make_mixing_layers(config)  # their arguments, checked now
    model = build_model(config)
    compile_model(model, config)
    check_callback_kwargs(config)
    check_fine_tune(model, config)
    return model


def check_fine_tune(model, config):
    """train.fine_tune can unfreeze at most every layer of the backbone."""
    fine_tune = config.train.fine_tune
    if fine_tune is None:
        return
    count = len(find_backbone(model).layers)
    if fine_tune.unfreeze > count:
        raise ConfigError("train.fine_tune.unfreeze", f"{config.model.backbone.name} has {count} layers; expected at most {count}, "
                          f"received {fine_tune.unfreeze}")


def count_params(model):
    return int(model.count_params())
