"""A sweep's search space: the config's `sweep:` section and `--param PATH=SPACE`, parsed and checked against the config.

Each parameter is a config path as error messages and `--set` write it (paths.py). Its
range must suit the value the config has there, and each end of a range and each choice
must leave the config valid, so that a mistake is one line before any trial trains.
Neither Optuna nor TensorFlow is imported here: sweep.py turns a Space into Optuna's terms.
"""

import copy
import math
from dataclasses import dataclass
from typing import Any

import yaml

from cnnlab.config.sections import check_choice, check_int
from cnnlab.config.experiment import resolve_config
from cnnlab.config.schema import MAX_FOLDS, to_plain
from cnnlab.errors import ConfigError, one_line, short_repr, suggest, type_name
from cnnlab.config.metric_names import maximized
from cnnlab.config.keypaths import format_path, get_value, has_path, parse_path, set_value
from cnnlab.config.yaml_safety import load_yaml

KINDS = ("int", "float", "choice")
SPACE_KEYS = KINDS + ("step", "log")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")
DEFAULT_TRIALS = 20
# Failed trials in a row (by trial number, across every process of the study) that stop a sweep. A space where
# a fair share of the values trains hardly ever fails 10 times running (a half-failing one in under 1% of
# 20-trial sweeps), while a sweep that can only fail stops after 10 trials instead of never; --resume goes on.
DEFAULT_MAX_FAILURES = 10
MAX_TRIALS = 100_000
EXAMPLE = "{int: [8, 64]}, {float: [0.0001, 0.01], log: true} or {choice: [16, 32]}"


@dataclass(frozen=True)
class Param:
    """One searched config value: an int or float range, or a choice among any YAML values."""

    path: str  # as paths.format_path writes it, e.g. "model.layers[0].Conv2D.filters"
    kind: str  # one of KINDS
    low: Any = None  # int or float ranges
    high: Any = None
    step: Any = None  # None: any value (an int range then steps by 1)
    log: bool = False
    choices: tuple = ()  # choice only: the YAML values, each one whole value for `path`


@dataclass(frozen=True)
class Space:
    params: tuple  # of Param: the `sweep.params` order, then new --param entries
    metric: str  # a logged name such as val_accuracy
    direction: str  # one of DIRECTIONS
    trials: int
    sampler: str  # one of SAMPLERS
    pruner: str  # one of PRUNERS
    seed: int  # the sampler's seed
    max_failures: Any = DEFAULT_MAX_FAILURES  # failed trials in a row that stop the sweep; None: never stop for failures
    cv_folds: Any = None  # K: each trial is a K-fold cross-validation (search/cv.py), ranked by its folds' weighted mean


def parse_space(user, cli_params=(), trials=None):
    """The Space of the user's config (the YAML as loaded, overrides applied); every mistake a ConfigError.

    Args:
        cli_params: `PATH=SPACE` texts of --param; each adds an entry or replaces the one of that path.
        trials: --trials; replaces `sweep.trials`.
    """
    raw = to_plain(resolve_config(user).raw)
    section = raw["sweep"] or {}
    entries = param_entries(section.get("params"), cli_params)
    params = tuple(parse_param(label, path, spec, raw, user) for path, (label, spec) in entries.items())
    labels = [label for label, _ in entries.values()]
    check_no_overlap(params, labels)
    sampler = check_choice("tpe" if section.get("sampler") is None else section["sampler"], "sweep.sampler", SAMPLERS)
    trials = parse_trials(section.get("trials"), trials, sampler, params, labels)
    metric = parse_metric(section.get("metric"), raw)
    direction = section.get("direction")
    direction = default_direction(metric) if direction is None else check_choice(direction, "sweep.direction", DIRECTIONS)
    pruner = section.get("pruner", "median")
    pruner = check_choice("none" if pruner is None else pruner, "sweep.pruner", PRUNERS)  # null turns pruning off, as null turns a callback off
    seed = section.get("seed")
    seed = raw["seed"] if seed is None else check_int(seed, "sweep.seed", minimum=0, maximum=2**32 - 1)
    max_failures = parse_max_failures(section)
    cv_folds = section.get("cv_folds")
    cv_folds = None if cv_folds is None else check_int(cv_folds, "sweep.cv_folds", minimum=2, maximum=MAX_FOLDS)
    if cv_folds is not None and not metric.startswith("val_"):
        raise ConfigError("sweep.metric", f"a cross-validated sweep (sweep.cv_folds) ranks trials by a validation metric, "
                          f"which every fold has; received {short_repr(metric)}")
    return Space(params=params, metric=metric, direction=direction, trials=trials, sampler=sampler, pruner=pruner, seed=seed,
                 max_failures=max_failures, cv_folds=cv_folds)


def parse_max_failures(section):
    """`sweep.max_failures`: absent is the default, null never stops for failures (as null turns a pruner off)."""
    if "max_failures" not in section:
        return DEFAULT_MAX_FAILURES
    value = section["max_failures"]
    return None if value is None else check_int(value, "sweep.max_failures", minimum=1, maximum=MAX_TRIALS)


def parse_trials(given, option, sampler, params, labels):
    """--trials, else `sweep.trials`, else 20, or the whole grid for the grid sampler; never fewer than the grid."""
    label = "--trials" if option is not None else "sweep.trials"
    trials = option if option is not None else given
    if sampler != "grid":
        return check_int(DEFAULT_TRIALS if trials is None else trials, label, minimum=1, maximum=MAX_TRIALS)
    size = math.prod(grid_count(param, label_) for param, label_ in zip(params, labels))
    if size > MAX_TRIALS:
        raise ConfigError(label, f"the grid has {size:,} points, more than the {MAX_TRIALS:,} trials a sweep may have: search fewer values")
    trials = check_int(size if trials is None else trials, label, minimum=1, maximum=MAX_TRIALS)
    if size > trials:
        raise ConfigError(label, f"the grid has {size:,} points but {label} is {trials}: raise it to {size} or search fewer values")
    return trials


def apply_values(config, values):
    """A deep copy of `config` with each `{path: value}` set; the shorthands it goes through are written out."""
    config = copy.deepcopy(config)
    for path, value in values.items():
        set_value(config, path, copy.deepcopy(value))
    return config


def grid_size(space):
    """How many points the grid sampler would try: the product of each parameter's count of values."""
    return math.prod(grid_count(param) for param in space.params)


def grid_values(param):
    """Every value of `param` the grid sampler tries, in order."""
    count = grid_count(param)
    if param.kind == "choice":
        return param.choices
    step = param.step or 1
    if param.kind == "int":
        return tuple(param.low + i * step for i in range(count))
    return tuple(round(param.low + i * step, 12) for i in range(count))  # 0.1 * 3 is 0.30000000000000004


def grid_count(param, where=None):
    """The number of values `param` takes; a float range without a step has no end of them."""
    if param.kind == "choice":
        return len(param.choices)
    if param.kind == "float" and param.step is None:
        raise ConfigError(where or f"sweep.params.{param.path}",
                          f"sampler grid needs a finite set of values: give the float range a step or use choice, received {describe(param)}")
    return round((param.high - param.low) / (param.step or 1)) + 1


def describe(param):
    """The parameter as its YAML space, for error messages."""
    if param.kind == "choice":
        spec = {"choice": list(param.choices)}
    else:
        spec = {param.kind: [param.low, param.high]}
        spec.update({"step": param.step} if param.step is not None else {})
        spec.update({"log": True} if param.log else {})
    return yaml.safe_dump(spec, default_flow_style=True, width=10**6).strip()


# ---------------------------------------------------------------- entries


def param_entries(params, cli_params):
    """{canonical path: (label for errors, YAML space)} from `sweep.params`, then --param (which wins)."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError("sweep.params", f"expected a mapping of config paths to spaces such as {{train.batch_size: {{choice: [16, 32]}}}}, received {type_name(params)} {short_repr(params)}")
    entries = {}
    for key, spec in params.items():
        path = format_path(parse_path(key, where="sweep.params"))
        entries[path] = (f"sweep.params.{path}", spec)
    for text in cli_params:
        path, spec = parse_param_option(text)
        entries[path] = (f"--param {path}", spec)
    if not entries:
        raise ConfigError("sweep.params", "is empty: name at least one config value to search, here or with --param PATH=SPACE, e.g. "
                                          "compile.optimizer.learning_rate: {float: [0.0001, 0.01], log: true}")
    return entries


def parse_param_option(text):
    """`model.layers[4].Dense.units={int: [32, 256]}` → (canonical path, the space read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError("--param", f"expected PATH=SPACE such as 'train.batch_size={{choice: [16, 32]}}', received {short_repr(text)}")
    path = format_path(parse_path(key.strip(), where="--param"))
    try:
        return path, load_yaml(value, where="--param", at=parse_path(path))
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or one_line(exc)
        raise ConfigError(f"--param {path}", f"SPACE is not valid YAML ({problem}), received {short_repr(value)}") from exc


# ---------------------------------------------------------------- one parameter


def parse_param(label, path, spec, raw, user):
    """One entry: its path must be in the config, its space well formed and suited to the value there."""
    parts = parse_path(path)
    if parts[0] == "sweep":
        raise ConfigError(label, "a sweep cannot search its own settings; name a value outside sweep:")
    try:
        current = get_value(raw, parts, where=label)
    except ConfigError as exc:
        raise with_default_hint(exc, raw, parts) from None
    param = parse_spec(label, path, spec)
    check_fits(label, param, current)
    check_keeps_config_valid(label, param, user)
    return param


def with_default_hint(exc, raw, parts):
    """A key missing from a mapping that exists is most often a Keras argument left at its default: say how to search it."""
    parent = parts[:-1]
    if not parent or "did you mean" in exc.message or not has_path(raw, parent) or not isinstance(get_value(raw, parent), dict):
        return exc
    return ConfigError(exc.path, f"{exc.message}; to search a value the config leaves to its default, write {parts[-1]} under {format_path(parent)} first")


def parse_spec(label, path, spec):
    if not isinstance(spec, dict):
        raise ConfigError(label, f"expected a space such as {EXAMPLE}, received {type_name(spec)} {short_repr(spec)}")
    for key in spec:
        if key not in SPACE_KEYS:
            raise ConfigError(label, f"unknown key {short_repr(key)}{suggest(key, SPACE_KEYS)}; valid keys of a space: {', '.join(SPACE_KEYS)}")
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(label, f"expected exactly one of {', '.join(KINDS)}, received {short_repr(spec)}")
    kind = kinds[0]
    if kind == "choice":
        return parse_choice(label, path, spec)
    return parse_range(label, path, kind, spec)


def parse_choice(label, path, spec):
    if "step" in spec or "log" in spec:
        raise ConfigError(label, f"step and log are for int and float ranges, not choice, received {short_repr(spec)}")
    choices = spec["choice"]
    if not isinstance(choices, list) or not choices:
        raise ConfigError(label, f"choice expected a non-empty list of values such as [16, 32, 64], received {short_repr(choices)}")
    seen = set()
    for value in choices:
        key = yaml.safe_dump(value, sort_keys=True)  # 1, 1.0 and true are three choices, [1] twice is one
        if key in seen:
            raise ConfigError(label, f"choice lists {short_repr(value)} twice, received {short_repr(choices)}")
        seen.add(key)
    return Param(path=path, kind="choice", choices=tuple(copy.deepcopy(choices)))


def parse_range(label, path, kind, spec):
    bounds = spec[kind]
    number = is_int if kind == "int" else is_number
    wanted = "integers" if kind == "int" else "numbers"
    if not isinstance(bounds, list) or len(bounds) != 2 or not all(number(b) for b in bounds):
        raise ConfigError(label, f"{kind} expected [low, high], two {wanted} such as {'[8, 64]' if kind == 'int' else '[0.0, 0.5]'}, received {short_repr(bounds)}")
    low, high = bounds if kind == "int" else map(float, bounds)
    if low > high:
        raise ConfigError(label, f"{kind} expected low <= high, received [{low}, {high}]")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(label, f"log expected true or false, received {short_repr(log)}")
    if log and low <= 0:
        raise ConfigError(label, f"a log range needs low > 0, received [{low}, {high}]")
    step = spec.get("step")
    if step is not None:
        step = parse_step(label, kind, step, log, low, high)
    return Param(path=path, kind=kind, low=low, high=high, step=step, log=log)


def parse_step(label, kind, step, log, low, high):
    if log:
        raise ConfigError(label, "step and log cannot be combined: a log range has no fixed step; remove one")
    if not (is_int(step) if kind == "int" else is_number(step)) or step <= 0:
        raise ConfigError(label, f"step expected a positive {'integer' if kind == 'int' else 'number'}, received {short_repr(step)}")
    count = (high - low) / step
    if abs(count - round(count)) > 1e-9 * max(1.0, count):
        raise ConfigError(label, f"high - low must be a whole number of steps, so that high is searched; received [{low}, {high}] with step {step}")
    return step if kind == "int" else float(step)


def check_fits(label, param, current):
    """A range's type is the value's type: an int range for an integer, a float range for a real number.

    Judged from the value the config has (defaults filled in): so `filters` as a float range is
    refused, and so is an int range on `learning_rate`, which would search only whole numbers.
    """
    if param.kind == "int" and not is_int(current):
        hint = " (use float: [low, high] for a real number)" if isinstance(current, float) else ""
        raise ConfigError(label, f"an int range needs an integer here, but the config has {described(current)}{hint}")
    if param.kind == "float" and not isinstance(current, float):
        hint = f" (use int: [low, high] for an integer, or write {current}.0 in the config if it is a real number)" if is_int(current) else ""
        raise ConfigError(label, f"a float range needs a real number here, but the config has {described(current)}{hint}")


def check_keeps_config_valid(label, param, user):
    """Each choice, and each end of a range, set alone in the config must still pass the config's own checks."""
    if param.kind == "choice":
        tried = [(f"choice {short_repr(value)}", value) for value in param.choices]
    else:
        tried = [(f"low {param.low}", param.low), (f"high {param.high}", param.high)]
    for what, value in tried:
        try:
            resolve_config(apply_values(user, {param.path: value}))
        except ConfigError as exc:
            raise ConfigError(label, f"{what} makes the config invalid: {exc}") from exc


def check_no_overlap(params, labels):
    """`model.layers` and `model.layers[0].Conv2D.filters` together would set one value twice, or a layer that is gone."""
    parsed = [parse_path(p.path) for p in params]
    for i, outer in enumerate(parsed):
        for j, inner in enumerate(parsed):
            if i != j and inner[: len(outer)] == outer:
                raise ConfigError(labels[j], f"lies inside {params[i].path}, which is searched too; search one of them")


# ---------------------------------------------------------------- the objective


def parse_metric(metric, raw):
    """The logged value to optimize: given, or the checkpoint's monitor; given, it must be one the runs log."""
    if metric is None:
        return raw["train"]["callbacks"]["checkpoint"].get("monitor", "val_loss")
    names = ["loss", *raw["compile"]["metrics"]]
    logged = names + [f"val_{name}" for name in names]
    if not isinstance(metric, str) or metric not in logged:
        raise ConfigError("sweep.metric", f"expected a value the runs log: one of {', '.join(logged)}{suggest(metric, logged)}, received {short_repr(metric)}")
    return metric


def default_direction(metric):
    """Accuracies, AUCs and F-measures are maximized; losses and errors minimized (metric_names.maximized)."""
    return "maximize" if maximized(metric) else "minimize"


def described(value):
    """`an integer 32`, `a list [16, 16]`, `null`: a config value as error messages name it."""
    return "null" if value is None else f"{type_name(value)} {short_repr(value)}"


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
