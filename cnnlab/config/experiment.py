"""Experiment configs: load YAML safely, fill defaults, validate once, freeze.

Validation here covers structure and types only; whether a layer, optimizer or
keyword exists is Keras' business and is checked in `registry.py`, so this module
stays importable (and testable) without TensorFlow.
"""

import copy
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from cnnlab.config.keypaths import parse_path, set_value
from cnnlab.config.schema import DEFAULTS, ExperimentConfig, to_plain
from cnnlab.config.sections import (check_backbone_data, check_final_fit, check_fine_tune, check_int, check_keys, check_name, merge,
                                    resolve_compile, resolve_data, resolve_distribution, resolve_mixed_precision,
                                    resolve_model, resolve_tracking, resolve_train, check_schedule_callbacks)
from cnnlab.config.yaml_safety import load_yaml
from cnnlab.errors import ConfigError, one_line, short_repr, type_name


def with_train_values(config, **values):
    """The config with `train` values replaced, in its YAML too: how a run records what `auto` became."""
    raw = copy.deepcopy(to_plain(config.raw))
    raw["train"].update(values)
    return replace(config, train=replace(config.train, **values), raw=raw)


def with_learning_rate(config, rate):
    """The config with compile.optimizer.learning_rate replaced, in its YAML too: how a run records a schedule's derived steps."""
    raw = copy.deepcopy(to_plain(config.raw))
    raw["compile"]["optimizer"]["learning_rate"] = to_plain(rate)
    optimizer = replace(config.compile.optimizer, kwargs={**config.compile.optimizer.kwargs, "learning_rate": rate})
    return replace(config, compile=replace(config.compile, optimizer=optimizer), raw=raw)


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
    check_final_fit(train, distribution)
    check_schedule_callbacks(compile_, train)
    mixed_precision = resolve_mixed_precision(merged["mixed_precision"])
    tracking = resolve_tracking(merged["tracking"], name)
    merged["tracking"] = asdict(tracking)
    merged["distribution"]["devices"] = list(distribution.devices) if distribution.devices else None
    merged["compile"]["optimizer"] = {"name": compile_.optimizer.name, **compile_.optimizer.kwargs}
    merged["compile"]["metrics"] = list(compile_.metrics)
    merged["compile"]["loss"] = compile_.loss if compile_.loss_kwargs is None else {"name": compile_.loss, **compile_.loss_kwargs}
    merged["model"]["layers"] = [{spec.type: dict(spec.kwargs)} for spec in model.layers]
    merged["model"]["augmentation"] = [{spec.type: dict(spec.kwargs)} for spec in model.augmentation] or None
    if model.backbone is not None:
        backbone = model.backbone
        merged["model"]["backbone"] = {"name": backbone.name, "weights": backbone.weights, "trainable": backbone.trainable, **backbone.kwargs}
    if train.fine_tune is not None:
        merged["train"]["fine_tune"] = asdict(train.fine_tune)
    if train.fold is not None:
        merged["train"]["fold"] = asdict(train.fold)
    merged["train"]["callbacks"] = {k: (dict(v) if v is not None else None) for k, v in train.callbacks.items()}
    return ExperimentConfig(name=name, seed=seed, data=data, model=model, compile=compile_, train=train,
                            distribution=distribution, mixed_precision=mixed_precision, raw=merged,
                            tracking=tracking)


# In a config, but not settings of how its runs train: a sweep's search space, and where runs are logged.
# HParams, MLflow's params and `runs --plot`'s table of differences leave them out.
NOT_TRAINING = ("sweep", "tracking")


def settings_of(config, leave_out=()):
    """The resolved config as {path: value}, one entry per setting (paths.flatten), without NOT_TRAINING and `leave_out`."""
    from cnnlab.config.keypaths import flatten

    return flatten({key: value for key, value in to_plain(config.raw).items() if key not in (*NOT_TRAINING, *leave_out)})
