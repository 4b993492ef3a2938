"""Experiment configs: load YAML safely, fill defaults, validate once, freeze.

Validation here covers structure and types only; whether a layer, optimizer or
keyword exists is Keras' business and is checked in `registry.py`, so this module
stays importable (and testable) without TensorFlow.
"""

import copy
import math
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import yaml

from cnnlab.errors import ConfigError, one_line, short_repr, suggest, type_name
from cnnlab.config.keypaths import format_path, parse_path, set_value
from cnnlab.config.yaml_safety import load_yaml

SOURCES = ("digits", "fashion_mnist", "mnist", "image_folder", "npz")
SOURCES_NEEDING_PATH = ("image_folder", "npz")
COLOR_MODES = ("grayscale", "rgb")
CALLBACK_NAMES = ("checkpoint", "early_stopping", "reduce_lr", "tensorboard")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "data_parallel")  # the last is keras.distribution, on JAX
PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")  # mixed_precision: true means mixed_float16
LR_SCALING = ("none", "linear")
# The `sweep:` section's keys; what they mean is checked by space.py, which `train` never calls
SWEEP_KEYS = ("metric", "direction", "trials", "sampler", "pruner", "seed", "max_failures", "params")
DEVICE_PATTERN = re.compile(r"^/?(?:job:[A-Za-z0-9_]+/(?:replica:\d+/)?(?:task:\d+/)?)?(?:device:)?(CPU|GPU|TPU):\d+$", re.IGNORECASE)
AUTO = "auto"
MAX_EPOCHS = 100_000
MAX_BATCH_PARTS = 64
MAX_BATCH_SIZE = 1_000_000
MAX_DIM = 16_384
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
BACKBONE_POOLING = ("avg", "max")
FINE_TUNE_KEYS = ("unfreeze", "epochs", "learning_rate")
# tracking.mlflow URIs are MLflow's (and SQLAlchemy's, as mysql+pymysql://); a scheme outside these is a typo caught at load
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")

DEFAULTS = {
    "name": None,  # defaults to the YAML file's stem
    "seed": 42,
    "data": {
        "source": "digits",
        "path": None,
        "image_size": None,
        "pad_to": None,
        "color_mode": "grayscale",
        "rescale": 1 / 255,
        "test_split": 0.0,
    },
    # augmentation: Keras' random preprocessing layers, applied to the input in training only (registry.AUGMENTATION_LAYERS);
    # backbone: a keras.applications model without its top, between the augmentation and `layers` (transfer learning)
    "model": {"input_shape": None, "augmentation": None, "backbone": None, "layers": None},
    "compile": {
        "optimizer": {"name": "adam"},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
    },
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "validation_split": 0.2,
        "shuffle": True,
        # "auto" is resolved when a run starts and the number is written to the run's config.yaml,
        # so that re-running that file reproduces the run on any machine (cnnlab/training/tf_loop.py)
        "batch_parts": "auto",
        "steps_per_execution": "auto",
        # a second phase after the first: unfreeze the backbone's top layers, train on at a lower learning rate
        "fine_tune": None,
        "callbacks": {
            "checkpoint": {"monitor": "val_loss", "save_best_only": True},
            "early_stopping": {"monitor": "val_loss", "patience": 3, "restore_best_weights": True},
            "reduce_lr": None,
            "tensorboard": None,
        },
    },
    # tf.distribute; the default strategy trains on one device exactly as before this section existed
    "distribution": {"strategy": "default", "devices": None, "scale_learning_rate": "none"},
    "mixed_precision": False,
    # a search space for `cnnlab sweep` (space.py); `train` keeps it in the run's config.yaml and ignores it
    "sweep": None,
    # MLflow (cnnlab/tracking/mlflow.py): mlflow is null (off), true (runs/mlflow.db beside the runs) or a tracking URI;
    # experiment null becomes the config's name when mlflow is on, so the runs of a sweep or comparison share one
    "tracking": {"mlflow": None, "experiment": None},
}

# Sections whose keys their reader fixes, not DEFAULTS: fine_tune and sweep default to null, and each callback's
# default holds its Keras arguments, which are free-form (the callbacks themselves are the keys)
READER_KEYS = {("train", "callbacks"): CALLBACK_NAMES, ("train", "fine_tune"): FINE_TUNE_KEYS, ("sweep",): SWEEP_KEYS}
# Mappings in DEFAULTS that are a Keras class's keyword arguments, checked against its signature in registry.py
KERAS_ARGUMENTS = (("compile", "optimizer"),)


def config_sections():
    """Every section with a fixed set of keys, as {path: keys}, () being the top level: DEFAULTS' mappings and READER_KEYS.

    The one list of what a config may hold: check_keys refuses any other key, and
    tests/test_hostile_configs.py fuzzes every section and key it names, so a section
    added to DEFAULTS is checked and fuzzed the day it is added.
    """
    sections = {}

    def walk(path, default):
        sections[path] = tuple(READER_KEYS.get(path, default))
        if path in READER_KEYS:
            return  # what lies inside is free-form (a callback's arguments) or its reader's business
        for key, value in default.items():
            child = path + (key,)
            if child in READER_KEYS or (isinstance(value, dict) and child not in KERAS_ARGUMENTS):
                walk(child, value or {})

    walk((), DEFAULTS)
    return sections


def key_paths():
    """Every key path a config may set, sections included, as tuples such as ("train", "fine_tune", "epochs")."""
    return [path + (key,) for path, keys in CONFIG_SECTIONS.items() for key in keys]


CONFIG_SECTIONS = config_sections()


@dataclass(frozen=True)
class DataConfig:
    source: str
    path: Optional[str]
    image_size: Optional[tuple]
    pad_to: Optional[tuple]
    color_mode: str
    rescale: float
    test_split: float


@dataclass(frozen=True)
class LayerSpec:
    """One entry of `model.layers`: a Keras layer class name and its keyword arguments."""

    type: str
    kwargs: Mapping[str, Any]
    path: str  # e.g. "model.layers[3].Conv2D", for error messages


@dataclass(frozen=True)
class BackboneConfig:
    """`model.backbone`: a keras.applications constructor, called with include_top=False and these arguments."""

    name: str  # e.g. MobileNetV2
    weights: Optional[str]  # "imagenet", None (random) or the path of a weights file
    trainable: bool  # False: frozen, and called in inference mode (BatchNormalization keeps its statistics)
    kwargs: Mapping[str, Any]  # the constructor's other arguments: alpha, pooling, minimalistic, ...


@dataclass(frozen=True)
class ModelConfig:
    input_shape: tuple
    layers: tuple
    backbone: Optional[BackboneConfig] = None
    augmentation: tuple = ()  # LayerSpecs of model.augmentation, applied before `layers`; empty: none


@dataclass(frozen=True)
class OptimizerConfig:
    name: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class CompileConfig:
    optimizer: OptimizerConfig
    loss: str
    metrics: tuple


@dataclass(frozen=True)
class FineTuneConfig:
    """`train.fine_tune`: the second phase of transfer learning, after the first has ended."""

    unfreeze: int  # the backbone's top layers made trainable (BatchNormalization layers stay frozen)
    epochs: int  # epochs of the second phase, numbered on from the last epoch of the first
    learning_rate: float  # replaces compile.optimizer.learning_rate in the second phase


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    validation_split: float
    shuffle: bool
    callbacks: Mapping[str, Optional[Mapping[str, Any]]]  # a disabled callback maps to None
    batch_parts: Any = AUTO  # "auto" or the number of parts each training batch is split into
    steps_per_execution: Any = AUTO  # "auto" or the training steps per compiled call, as in Keras' compile()
    fine_tune: Optional[FineTuneConfig] = None


@dataclass(frozen=True)
class DistributionConfig:
    strategy: str  # one of STRATEGIES
    devices: Optional[tuple]  # mirrored only; None means every visible GPU (or the CPU)
    scale_learning_rate: str  # "linear" multiplies the learning rate by the number of replicas


@dataclass(frozen=True)
class TrackingConfig:
    """`tracking:`: where a run is logged besides its own folder."""

    mlflow: Any  # None (off), True (the local store beside the runs, cnnlab/tracking/mlflow.py) or a tracking URI
    experiment: Optional[str]  # the MLflow experiment; the config's name where not given


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    compile: CompileConfig
    train: TrainConfig
    distribution: DistributionConfig
    mixed_precision: Any  # False, or the Keras dtype policy: mixed_float16 or mixed_bfloat16
    raw: Mapping[str, Any]  # the resolved config as plain data, written to the run folder
    tracking: TrackingConfig = TrackingConfig(mlflow=None, experiment=None)

    def to_yaml(self):
        return yaml.safe_dump(to_plain(self.raw), sort_keys=False, allow_unicode=True)


def with_train_values(config, **values):
    """The config with `train` values replaced, in its YAML too: how a run records what `auto` became."""
    raw = copy.deepcopy(to_plain(config.raw))
    raw["train"].update(values)
    return replace(config, train=replace(config.train, **values), raw=raw)


# ---------------------------------------------------------------- loading


def load_config(path, overrides=()):
    """Reads a YAML file, applies `section.key=value` overrides and validates the result."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(None, f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(None, f"cannot read config file {path}: {exc}") from None
    try:
        return config_from_text(text, overrides=overrides, default_name=path.stem)
    except ConfigError as exc:
        raise exc.with_source(str(path)) from exc.__cause__


@contextmanager
def errors_naming(path):
    """Adds the config file's name to ConfigErrors found after loading (by the builder or the trainer)."""
    try:
        yield
    except ConfigError as exc:
        if exc.source is None:
            raise exc.with_source(str(path)) from exc.__cause__  # the Keras error behind it stays for --debug
        raise


def config_from_text(text, overrides=(), default_name="experiment"):
    user = parse_yaml(text)
    for override in overrides:
        apply_override(user, override)
    try:
        return resolve_config(user, default_name=default_name)
    except RecursionError:
        raise ConfigError(None, "the config is nested too deeply") from None


def parse_yaml(text):
    """Safe YAML only: Python object tags are refused by `safe_load` itself, alias bombs by `load_yaml`."""
    try:
        data = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(None, f"{where}YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(None, f"YAML error: {one_line(exc)}") from None
    except RecursionError:
        raise ConfigError(None, "YAML nesting is too deep") from None
    if data is None:
        raise ConfigError(None, "the config is empty; expected a mapping with sections " + ", ".join(DEFAULTS))
    if not isinstance(data, dict):
        raise ConfigError(None, f"expected a mapping with sections {', '.join(DEFAULTS)}, received {type_name(data)}")
    return data


def parse_override(text):
    """Splits `train.epochs=3` into (("train", "epochs"), 3); the key is a path as in error messages, the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", f"expected KEY=VALUE such as train.epochs=3, received {short_repr(text)}")
    parts = parse_path(key.strip(), where="--set")
    try:
        parsed = load_yaml(value, where="--set", at=parts) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_override(user, text):
    """Sets one `--set` value in the user's config; a missing section or key is created, a list entry must exist."""
    parts, value = parse_override(text)
    set_value(user, parts, value)


# ---------------------------------------------------------------- resolving


def resolve_config(user, default_name="experiment"):
    """Merges user values over the defaults and validates every field, naming its path on error."""
    check_keys(user)
    merged = merge(DEFAULTS, user)
    if merged["name"] is None:
        merged["name"] = default_name
    name = check_name(merged["name"], "name")
    seed = check_int(merged["seed"], "seed", minimum=0, maximum=2**32 - 1)
    if merged["model"]["backbone"] is not None and "rescale" not in user.get("data", {}):
        merged["data"]["rescale"] = 1.0  # a backbone scales the pixels itself: see check_backbone_data
    data = resolve_data(merged["data"])
    model = resolve_model(merged["model"])
    compile_ = resolve_compile(merged["compile"])
    train = resolve_train(merged["train"])
    distribution = resolve_distribution(merged["distribution"])
    check_backbone_data(model, data)
    check_fine_tune(train, model, distribution)
    mixed_precision = resolve_mixed_precision(merged["mixed_precision"])
    tracking = resolve_tracking(merged["tracking"], name)
    merged["tracking"] = asdict(tracking)
    merged["distribution"]["devices"] = list(distribution.devices) if distribution.devices else None
    merged["compile"]["optimizer"] = {"name": compile_.optimizer.name, **compile_.optimizer.kwargs}
    merged["compile"]["metrics"] = list(compile_.metrics)
    merged["model"]["layers"] = [{spec.type: dict(spec.kwargs)} for spec in model.layers]
    merged["model"]["augmentation"] = [{spec.type: dict(spec.kwargs)} for spec in model.augmentation] or None
    if model.backbone is not None:
        backbone = model.backbone
        merged["model"]["backbone"] = {"name": backbone.name, "weights": backbone.weights, "trainable": backbone.trainable, **backbone.kwargs}
    if train.fine_tune is not None:
        merged["train"]["fine_tune"] = asdict(train.fine_tune)
    merged["train"]["callbacks"] = {k: (dict(v) if v is not None else None) for k, v in train.callbacks.items()}
    return ExperimentConfig(name=name, seed=seed, data=data, model=model, compile=compile_, train=train,
                            distribution=distribution, mixed_precision=mixed_precision, raw=merged,
                            tracking=tracking)


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


def default_at(path):
    """The DEFAULTS value at a key path; None for a key inside a section that defaults to null."""
    node = DEFAULTS
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


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
    optimizer = OptimizerConfig(name=opt["name"], kwargs=kwargs)
    loss = c["loss"]
    if not isinstance(loss, str):
        raise ConfigError("compile.loss", f"expected a Keras loss name such as sparse_categorical_crossentropy, received {short_repr(loss)}")
    metrics = c["metrics"]
    if isinstance(metrics, str):
        metrics = [metrics]
    if metrics is None:
        metrics = []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ConfigError("compile.metrics", f"expected a list of Keras metric names such as [accuracy], received {short_repr(metrics)}")
    return CompileConfig(optimizer=optimizer, loss=loss, metrics=tuple(metrics))


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
                       batch_parts=parts, steps_per_execution=steps, fine_tune=fine_tune)


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


# ---------------------------------------------------------------- small checks


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


# In a config, but not settings of how its runs train: a sweep's search space, and where runs are logged.
# HParams, MLflow's params and `runs --plot`'s table of differences leave them out.
NOT_TRAINING = ("sweep", "tracking")


def settings_of(config, leave_out=()):
    """The resolved config as {path: value}, one entry per setting (paths.flatten), without NOT_TRAINING and `leave_out`."""
    from cnnlab.config.keypaths import flatten

    return flatten({key: value for key, value in to_plain(config.raw).items() if key not in (*NOT_TRAINING, *leave_out)})


def to_plain(value):
    """Tuples and mappings to lists and dicts, so the resolved config dumps as plain YAML."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
