"""The experiment config's schema: every default (DEFAULTS), the allowed names, and the frozen dataclasses a
validated config becomes. Nothing here reads a file or checks a value: experiment.py loads, sections.py checks.
"""

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import yaml


SOURCES = ("digits", "fashion_mnist", "mnist", "image_folder", "npz")
SOURCES_NEEDING_PATH = ("image_folder", "npz")
COLOR_MODES = ("grayscale", "rgb")
CALLBACK_NAMES = ("checkpoint", "early_stopping", "reduce_lr", "tensorboard")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "data_parallel")  # the last is keras.distribution, on JAX
PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")  # mixed_precision: true means mixed_float16
LR_SCALING = ("none", "linear")
# The `sweep:` section's keys; what they mean is checked by space.py, which `train` never calls
SWEEP_KEYS = ("metric", "direction", "trials", "sampler", "pruner", "seed", "max_failures", "cv_folds", "params")
DEVICE_PATTERN = re.compile(r"^/?(?:job:[A-Za-z0-9_]+/(?:replica:\d+/)?(?:task:\d+/)?)?(?:device:)?(CPU|GPU|TPU):\d+$", re.IGNORECASE)
AUTO = "auto"
FINAL_FIT_ALL = "all"  # train.final_fit's one value: every training and validation image
MAX_EPOCHS = 100_000
MAX_BATCH_PARTS = 64
MAX_BATCH_SIZE = 1_000_000
MAX_DIM = 16_384
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
BACKBONE_POOLING = ("avg", "max")
FINE_TUNE_KEYS = ("unfreeze", "epochs", "learning_rate")
FOLD_KEYS = ("index", "of")
MAX_FOLDS = 1000
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
        # null, balanced (scikit-learn's compute_class_weight) or {class name or index: weight}: each training image's
        # loss weighted by its class, as Keras' fit(class_weight=...) does
        "class_weight": None,
        # {index: i, of: K} (`cnnlab cv` writes it into each fold's run): validate on fold i (1..K) of a stratified
        # k-fold of the training pool, seeded by `seed`, instead of validation_split
        "fold": None,
        # null, or all: once validation has chosen the epoch count (the best epoch), retrain from the same initial weights
        # on training + validation images for that many epochs into final.keras (cnnlab/training/final_fit.py)
        "final_fit": None,
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
READER_KEYS = {("train", "callbacks"): CALLBACK_NAMES, ("train", "fine_tune"): FINE_TUNE_KEYS, ("train", "fold"): FOLD_KEYS,
               ("sweep",): SWEEP_KEYS}
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
    loss_kwargs: Mapping[str, Any] = None  # `loss: {name: ..., label_smoothing: 0.1}`'s arguments; None for a bare name


@dataclass(frozen=True)
class FineTuneConfig:
    """`train.fine_tune`: the second phase of transfer learning, after the first has ended."""

    unfreeze: int  # the backbone's top layers made trainable (BatchNormalization layers stay frozen)
    epochs: int  # epochs of the second phase, numbered on from the last epoch of the first
    learning_rate: float  # replaces compile.optimizer.learning_rate in the second phase


@dataclass(frozen=True)
class FoldConfig:
    """`train.fold`: this run validates on fold `index` (1..of) of a stratified `of`-fold split of the training pool."""

    index: int
    of: int


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
    class_weight: Any = None  # None, "balanced" or {class name or index: weight}; resolved to indices when the data is loaded
    fold: Optional[FoldConfig] = None  # `cnnlab cv`'s fold runs; replaces validation_split
    final_fit: Optional[str] = None  # None, or FINAL_FIT_ALL: retrain on training + validation for the best epoch's count


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


def default_at(path):
    """The DEFAULTS value at a key path; None for a key inside a section that defaults to null."""
    node = DEFAULTS
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def to_plain(value):
    """Tuples and mappings to lists and dicts, so the resolved config dumps as plain YAML."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
