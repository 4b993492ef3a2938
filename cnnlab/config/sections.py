"""Each section of a config (data, model, compile, train, distribution, tracking, callbacks) read into its frozen
dataclass, every value checked where it is read and named by its path (`train.batch_size: expected ...`).
"""

import copy
import math
from urllib.parse import urlsplit

from cnnlab.config.keypaths import format_path
from cnnlab.config.schema import (AUTO, BACKBONE_POOLING, BackboneConfig, CALLBACK_NAMES, COLOR_MODES, CONFIG_SECTIONS,
                                  CompileConfig, DEVICE_PATTERN, FINAL_FIT_ALL, DataConfig, DistributionConfig, FINE_TUNE_KEYS,
                                  FOLD_KEYS, FineTuneConfig, FoldConfig, LR_SCALING, LayerSpec, MAX_BATCH_PARTS, MAX_BATCH_SIZE, MAX_DIM,
                                  MAX_EPOCHS, MAX_FOLDS, ModelConfig, NAME_PATTERN, OptimizerConfig, PRECISION_POLICIES, SOURCES,
                                  SOURCES_NEEDING_PATH, STRATEGIES, TRACKING_SCHEMES, TrackingConfig, TrainConfig,
                                  default_at)
from cnnlab.errors import ConfigError, short_repr, suggest, type_name


def merge(defaults, user):
    """Deep-merges user values over defaults; a user `null` or `false` for a mapping default disables it."""
    result = copy.deepcopy(defaults)
    for key, value in user.items():
        if isinstance(result.get(key), dict) and isinstance(value, dict) and key != "optimizer":
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def check_keys(user, path=()):
    """Unknown keys are errors (a typo must not be silently ignored); recurses into the sections of CONFIG_SECTIONS."""
    keys = CONFIG_SECTIONS[path]
    if not isinstance(user, dict):
        nullable = ", or null" if default_at(path) is None else ""
        raise ConfigError(format_path(path), f"expected a mapping of {', '.join(keys)}{nullable}, received {type_name(user)}")
    for key, value in user.items():
        where = format_path(path + (key if isinstance(key, str) and key.isidentifier() else short_repr(key),))
        if not isinstance(key, str) or key not in keys:
            raise ConfigError(where, f"unknown key{suggest(key, keys)}; valid keys here: {', '.join(keys)}")
        child = path + (key,)
        if child in CONFIG_SECTIONS and (value is not None or default_at(child) is not None):  # a section that defaults to null may be null
            check_keys(value, child)


def resolve_data(d):
    source = check_choice(d["source"], "data.source", SOURCES)
    path = d["path"]
    if path is not None and not isinstance(path, str):
        raise ConfigError("data.path", f"expected a file or folder path, received {type_name(path)} {short_repr(path)}")
    if path is None and source in SOURCES_NEEDING_PATH:
        raise ConfigError("data.path", f"is required for data.source {source} (a {'folder of class sub-folders' if source == 'image_folder' else '.npz file'})")
    image_size = check_optional_pair(d["image_size"], "data.image_size")
    pad_to = check_optional_pair(d["pad_to"], "data.pad_to")
    color_mode = check_choice(d["color_mode"], "data.color_mode", COLOR_MODES)
    rescale = check_number(d["rescale"], "data.rescale", minimum=0, exclusive=True)
    test_split = check_number(d["test_split"], "data.test_split", minimum=0, maximum=0.9)
    return DataConfig(source, path, image_size, pad_to, color_mode, rescale, test_split)


def resolve_model(m):
    if m["input_shape"] is None:
        raise ConfigError("model.input_shape", "is required: the shape of one input image, e.g. [28, 28, 1]")
    shape = m["input_shape"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 3:
        raise ConfigError("model.input_shape", f"expected a list of 1 to 3 positive ints such as [28, 28, 1], received {short_repr(shape)}")
    input_shape = tuple(check_int(v, f"model.input_shape[{i}]", minimum=1, maximum=MAX_DIM) for i, v in enumerate(shape))
    layers = m["layers"]
    if not isinstance(layers, list) or not layers:
        raise ConfigError("model.layers", f"expected a non-empty list of layers such as [{{Flatten: {{}}}}, {{Dense: {{units: 10}}}}], received {type_name(layers)}")
    backbone = parse_backbone(m["backbone"], input_shape)
    return ModelConfig(input_shape=input_shape, layers=tuple(parse_layer(item, i) for i, item in enumerate(layers)),
                       augmentation=resolve_augmentation(m["augmentation"]), backbone=backbone)


def parse_backbone(value, input_shape):
    """`{name: MobileNetV2, weights: imagenet, alpha: 0.35, pooling: avg, trainable: false}`, or just the name.

    Whether the name and the other arguments exist is keras.applications' business
    (registry.py); here: the shape of the entry, and what cnnlab itself reads.
    """
    if value is None:
        return None
    path = "model.backbone"
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(path, f"expected a keras.applications model such as {{name: MobileNetV2, weights: imagenet, pooling: avg}}, received {short_repr(value)}")
    for key in value:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(path, f"expected keyword argument names, received {short_repr(key)}")
    weights = value.get("weights", "imagenet")  # Keras' own default
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise ConfigError(f"{path}.weights", f"expected imagenet, null (random weights) or the path of a weights file, received {short_repr(weights)}")
    trainable = value.get("trainable", False)
    if not isinstance(trainable, bool):
        raise ConfigError(f"{path}.trainable", f"expected true or false, received {short_repr(trainable)}")
    if value.get("pooling") is not None:
        check_choice(value["pooling"], f"{path}.pooling", BACKBONE_POOLING)
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ConfigError("model.input_shape", f"a keras.applications backbone takes RGB images: expected [height, width, 3] "
                          f"(with data.color_mode: rgb), received {list(input_shape)}")
    kwargs = {key: v for key, v in value.items() if key not in ("name", "weights", "trainable")}
    return BackboneConfig(name=value["name"], weights=weights, trainable=trainable, kwargs=kwargs)


def check_backbone_data(model, data):
    """A backbone takes pixels 0..255: its family's preprocess_input is part of the model, so the data must not be scaled first."""
    if model.backbone is not None and data.rescale != 1:
        raise ConfigError("data.rescale", f"must be 1 with model.backbone: the model scales the pixels 0..255 itself, with "
                          f"{model.backbone.name}'s preprocess_input; remove data.rescale or set it to 1, received {data.rescale:g}")


def check_fine_tune(train, model, distribution):
    """The second phase unfreezes part of a backbone that the first phase kept frozen, on cnnlab's own loop."""
    if train.fine_tune is None:
        return
    if model.backbone is None:
        raise ConfigError("train.fine_tune", "needs model.backbone: it unfreezes the top layers of the backbone")
    if model.backbone.trainable:
        raise ConfigError("train.fine_tune", "needs model.backbone.trainable: false: the first phase trains the head on the frozen "
                          "backbone, the second unfreezes its top layers")
    if distribution.strategy != "default":
        raise ConfigError("train.fine_tune", f"runs on one device only (distribution.strategy default), received strategy {distribution.strategy}")


def resolve_augmentation(augmentation):
    """model.augmentation: null (none) or a list of layers written as in model.layers.

    Which classes may stand there (Keras' random preprocessing layers) is checked with
    the other Keras names, in registry.py, so this module stays free of TensorFlow.
    """
    if augmentation is None:
        return ()
    if not isinstance(augmentation, list):
        raise ConfigError("model.augmentation", "expected a list of Keras random preprocessing layers such as "
                          f"[{{RandomFlip: {{mode: horizontal}}}}, {{RandomRotation: {{factor: 0.1}}}}], or null; received {type_name(augmentation)} {short_repr(augmentation)}")
    return tuple(parse_layer(item, i, section="model.augmentation") for i, item in enumerate(augmentation))


def parse_layer(item, index, section="model.layers"):
    """A layer is `Name` or `{Name: {kwarg: value, ...}}`, Name being a Keras layer class."""
    path = f"{section}[{index}]"
    if isinstance(item, str):
        return LayerSpec(type=item, kwargs={}, path=f"{path}.{item}")
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(path, f"expected one Keras layer as {{ClassName: {{argument: value}}}}, received {short_repr(item)}")
    (name, kwargs), = item.items()
    if not isinstance(name, str):
        raise ConfigError(path, f"expected a Keras layer class name, received {short_repr(name)}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{path}.{name}", f"expected a mapping of keyword arguments, received {type_name(kwargs)} {short_repr(kwargs)}")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{path}.{name}", f"expected keyword argument names, received {short_repr(key)}")
    return LayerSpec(type=name, kwargs=dict(kwargs), path=f"{path}.{name}")


def resolve_compile(c):
    opt = c["optimizer"]
    if isinstance(opt, str):
        opt = {"name": opt}
    if not isinstance(opt, dict) or not isinstance(opt.get("name"), str):
        raise ConfigError("compile.optimizer", f"expected a name such as adam or a mapping {{name: adam, learning_rate: 0.001}}, received {short_repr(opt)}")
    kwargs = {k: v for k, v in opt.items() if k != "name"}
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError("compile.optimizer", f"expected keyword argument names, received {short_repr(key)}")
    check_schedule_shape(kwargs.get("learning_rate"))
    optimizer = OptimizerConfig(name=opt["name"], kwargs=kwargs)
    loss, loss_kwargs = c["loss"], None
    if isinstance(loss, dict) and isinstance(loss.get("name"), str):
        loss, loss_kwargs = loss["name"], {k: v for k, v in loss.items() if k != "name"}
        for key in loss_kwargs:
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError("compile.loss", f"expected keyword argument names, received {short_repr(key)}")
    if not isinstance(loss, str):
        raise ConfigError("compile.loss", "expected a Keras loss name such as sparse_categorical_crossentropy, or a mapping "
                          f"{{name: categorical_crossentropy, label_smoothing: 0.1}}, received {short_repr(loss)}")
    metrics = c["metrics"]
    if isinstance(metrics, str):
        metrics = [metrics]
    if metrics is None:
        metrics = []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("compile.metrics", f"expected a list of Keras metric names such as [accuracy], received {short_repr(metrics)}")
    return CompileConfig(optimizer=optimizer, loss=loss, metrics=tuple(metrics), loss_kwargs=loss_kwargs)


def check_schedule_shape(rate):
    """A learning rate is a number or `{schedule: NAME, argument: value, ...}`; whether the name and arguments
    exist is Keras' business, checked in cnnlab/model/schedules.py."""
    path = "compile.optimizer.learning_rate"
    if not isinstance(rate, dict):
        return
    if not isinstance(rate.get("schedule"), str):
        raise ConfigError(path, "expected a number or a schedule such as {schedule: CosineDecay, initial_learning_rate: 0.001, "
                          f"decay_steps: 1000}}, received {short_repr(rate)}")
    for key in rate:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(path, f"expected keyword argument names, received {short_repr(key)}")


def check_schedule_callbacks(compile_, train):
    """A schedule sets the learning rate at every step: ReduceLROnPlateau would overwrite it."""
    if not isinstance(compile_.optimizer.kwargs.get("learning_rate"), dict):
        return
    if train.callbacks["reduce_lr"] is not None:
        raise ConfigError("train.callbacks.reduce_lr", "cannot change a learning-rate schedule (compile.optimizer.learning_rate); "
                          "set reduce_lr to null or give a number as the learning rate")


def resolve_train(t):
    epochs = check_int(t["epochs"], "train.epochs", minimum=1, maximum=MAX_EPOCHS)
    batch_size = check_int(t["batch_size"], "train.batch_size", minimum=1, maximum=MAX_BATCH_SIZE)
    split = check_number(t["validation_split"], "train.validation_split", minimum=0, maximum=0.9, exclusive=True)
    shuffle = t["shuffle"]
    if not isinstance(shuffle, bool):
        raise ConfigError("train.shuffle", f"expected true or false, received {short_repr(shuffle)}")
    callbacks = resolve_callbacks(t["callbacks"])
    parts = check_auto_or_int(t["batch_parts"], "train.batch_parts", maximum=min(MAX_BATCH_PARTS, batch_size))
    steps = check_auto_or_int(t["steps_per_execution"], "train.steps_per_execution", maximum=MAX_BATCH_SIZE)
    fine_tune = resolve_fine_tune(t["fine_tune"])
    return TrainConfig(epochs=epochs, batch_size=batch_size, validation_split=split, shuffle=shuffle, callbacks=callbacks,
                       batch_parts=parts, steps_per_execution=steps, fine_tune=fine_tune,
                       class_weight=resolve_class_weight(t["class_weight"]), fold=resolve_fold(t["fold"]),
                       final_fit=resolve_final_fit(t["final_fit"]))


def resolve_fold(value):
    """`{index: i, of: K}`, both given: a fold run that guessed either would validate on other images than its cv meant."""
    path = "train.fold"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(FOLD_KEYS):
        raise ConfigError(path, f"expected {{index: I, of: K}} with 1 <= I <= K and K >= 2, or null, received {short_repr(value)}")
    of = check_int(value["of"], f"{path}.of", minimum=2, maximum=MAX_FOLDS)
    return FoldConfig(index=check_int(value["index"], f"{path}.index", minimum=1, maximum=of), of=of)


def resolve_final_fit(value):
    if value is None or value == FINAL_FIT_ALL:
        return value
    raise ConfigError("train.final_fit", f"expected {FINAL_FIT_ALL} (retrain on training + validation images for the best "
                      f"epoch's count) or null, received {short_repr(value)}")


def check_final_fit(train, distribution):
    """What the final fit cannot replay without validation: a second phase, a cv fold's scored validation images, a
    learning rate reduce_lr chose, several devices."""
    if train.final_fit is None:
        return
    if train.fine_tune is not None:
        raise ConfigError("train.final_fit", "cannot follow train.fine_tune: the final fit retrains one phase; "
                          "set one of them to null")
    if train.fold is not None:
        raise ConfigError("train.final_fit", "cannot be used in a cv fold (train.fold): each fold's best model scores its "
                          "own validation images, which a final fit would train on; set final_fit to null for cnnlab cv")
    if train.callbacks["reduce_lr"] is not None:
        raise ConfigError("train.final_fit", "cannot replay train.callbacks.reduce_lr: it lowers the learning rate on "
                          "validation, which the final fit trains on; set reduce_lr to null or use a schedule")
    if distribution.strategy != "default":
        raise ConfigError("train.final_fit", f"runs on one device only (distribution.strategy default), "
                          f"received strategy {distribution.strategy}")


def resolve_class_weight(value):
    """null, `balanced`, or `{class name or index: weight}`; whether the classes exist is known once the data is loaded."""
    path = "train.class_weight"
    if value is None or value == "balanced":
        return value
    if not isinstance(value, dict) or not value:
        raise ConfigError(path, f"expected balanced, null or a mapping {{class name or index: weight}}, received {short_repr(value)}")
    for key, weight in value.items():
        if isinstance(key, bool) or not isinstance(key, (str, int)) or (isinstance(key, str) and not key.strip()):
            raise ConfigError(path, f"expected class names or indices as keys, received {short_repr(key)}")
        check_number(weight, f"{path}.{key}", minimum=0, exclusive=True)
    return dict(value)


def resolve_fine_tune(value):
    """`{unfreeze: 30, epochs: 10, learning_rate: 1.0e-5}`: all three, since none has a default that suits every backbone."""
    path = "train.fine_tune"
    if value is None:
        return None
    missing = [key for key in FINE_TUNE_KEYS if key not in value]
    if missing:
        raise ConfigError(path, f"missing {', '.join(missing)}; expected {{unfreeze: N, epochs: N, learning_rate: X}}")
    return FineTuneConfig(unfreeze=check_int(value["unfreeze"], f"{path}.unfreeze", minimum=1, maximum=MAX_BATCH_SIZE),
                          epochs=check_int(value["epochs"], f"{path}.epochs", minimum=1, maximum=MAX_EPOCHS),
                          learning_rate=check_number(value["learning_rate"], f"{path}.learning_rate", minimum=0, exclusive=True))


def check_auto_or_int(value, path, maximum):
    """`auto` (cnnlab decides when the run starts, and records the number) or a positive int."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected auto or a positive int, received {short_repr(value)}")
    return check_int(value, path, minimum=1, maximum=maximum)


def resolve_mixed_precision(value):
    """False, or the Keras dtype policy to build the model under; `true` is mixed_float16, as before the policy could be named."""
    if value is True:
        return "mixed_float16"
    if value is False or value in PRECISION_POLICIES:
        return value
    raise ConfigError("mixed_precision", f"expected true, false, {' or '.join(PRECISION_POLICIES)}, received {short_repr(value)}")


def resolve_distribution(d):
    strategy = check_choice(d["strategy"], "distribution.strategy", STRATEGIES)
    scaling = check_choice("none" if d["scale_learning_rate"] is None else d["scale_learning_rate"],
                           "distribution.scale_learning_rate", LR_SCALING)
    devices = d["devices"]
    if devices is not None:
        if strategy != "mirrored":
            raise ConfigError("distribution.devices", f"is for distribution.strategy mirrored only; remove it or set the strategy to mirrored, received strategy {strategy}")
        if not isinstance(devices, list) or not devices:
            raise ConfigError("distribution.devices", f"expected a non-empty list of devices such as [GPU:0, GPU:1], received {short_repr(devices)}")
        for i, device in enumerate(devices):
            if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
                raise ConfigError(f"distribution.devices[{i}]", f"expected a device name such as GPU:0 or CPU:1, received {short_repr(device)}")
        if len(set(d_.upper() for d_ in devices)) != len(devices):
            raise ConfigError("distribution.devices", f"names a device twice: {short_repr(devices)}")
        devices = tuple(devices)
    return DistributionConfig(strategy=strategy, devices=devices, scale_learning_rate=scaling)


def resolve_tracking(t, name):
    """`tracking.mlflow`: null or false (off), true (the local store beside the runs) or a tracking URI with a known scheme."""
    store = None if t["mlflow"] is False else t["mlflow"]
    if store is not None and store is not True:
        store = check_tracking_uri(store, "tracking.mlflow")
    experiment = t["experiment"]
    if experiment is not None and (not isinstance(experiment, str) or not experiment.strip() or not experiment.isprintable()):
        raise ConfigError("tracking.experiment", f"expected an MLflow experiment name, or null for the config's name, received {short_repr(experiment)}")
    if store is not None and experiment is None:
        experiment = name  # resolved here, so that the runs a sweep or comparison derives from this config share it
    return TrackingConfig(mlflow=store, experiment=experiment)


def check_tracking_uri(value, path):
    expected = "expected true, null or an MLflow tracking URI such as sqlite:///runs/mlflow.db or http://127.0.0.1:5000"
    if not isinstance(value, str) or not value or not value.isprintable() or " " in value:
        raise ConfigError(path, f"{expected}, received {type_name(value)} {short_repr(value)}")
    scheme = value.partition(":")[0].split("+")[0].lower() if ":" in value else ""
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(path, f"{expected}; the scheme must be one of {', '.join(TRACKING_SCHEMES)}"
                          f"{suggest(scheme, TRACKING_SCHEMES)}, received {short_repr(value)}")
    if urlsplit(value).password is not None:  # config.yaml would keep it, in the run folder and in MLflow's artifacts
        raise ConfigError(path, "holds a password, which every run folder's config.yaml would keep (and MLflow's artifacts "
                          "with it); give it in the environment instead: MLFLOW_TRACKING_PASSWORD for a tracking server, "
                          "PGPASSWORD for PostgreSQL")
    return value


def resolve_callbacks(cbs):
    """Each callback is a mapping of its Keras keyword arguments, or null/false to turn it off."""
    resolved = {}
    for name in CALLBACK_NAMES:
        value = cbs.get(name)
        path = f"train.callbacks.{name}"
        if value is None or value is False:
            if name == "checkpoint":
                raise ConfigError(path, "cannot be turned off: the run keeps its best model as best.keras")
            resolved[name] = None
            continue
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping of keyword arguments, or null to turn it off, received {short_repr(value)}")
        for key in value:
            if not isinstance(key, str) or not key.isidentifier():
                raise ConfigError(path, f"expected keyword argument names, received {short_repr(key)}")
        resolved[name] = dict(value)
    return resolved


def check_name(value, path):
    """Names become folder names, so they must not contain path separators or start with a dot."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ConfigError(path, f"expected 1-80 letters, digits, '.', '_' or '-' (starting with a letter or digit), received {short_repr(value)}")
    return value


def check_int(value, path, minimum=None, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, f"expected an integer, received {type_name(value)} {short_repr(value)}")
    if minimum is not None and value < minimum:
        raise ConfigError(path, f"expected an integer >= {minimum}, received {short_repr(value)}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"expected an integer <= {maximum}, received {short_repr(value)}")
    return value


def check_number(value, path, minimum=None, maximum=None, exclusive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(path, f"expected a number, received {type_name(value)} {short_repr(value)}")
    if minimum is not None and (value < minimum or (exclusive and value == minimum)):
        raise ConfigError(path, f"expected a number {'>' if exclusive else '>='} {minimum}, received {short_repr(value)}")
    if maximum is not None and value > maximum:
        raise ConfigError(path, f"expected a number <= {maximum}, received {short_repr(value)}")
    return float(value)


def check_optional_pair(value, path):
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(path, f"expected [height, width] or null, received {short_repr(value)}")
    return tuple(check_int(v, f"{path}[{i}]", minimum=1, maximum=MAX_DIM) for i, v in enumerate(value))


def check_choice(value, path, choices):
    if value not in choices:
        raise ConfigError(path, f"expected one of {', '.join(choices)}{suggest(value, choices)}, received {short_repr(value)}")
    return value
