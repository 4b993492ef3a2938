"""Optimizer specs for `compare-optimizers`: `adam`, `sgd+momentum`, `sgd:learning_rate=0.05,momentum=0.9`.

Each candidate optimizer is fully described by its spec: Keras' defaults plus the
spec's own keyword arguments. The config's own `compile.optimizer` is not inherited.
Parsed and built once before any training, so that a typo costs nothing.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from cnnlab.model import builder
from cnnlab.config.schema import OptimizerConfig
from cnnlab.config.experiment import short_repr
from cnnlab.errors import ConfigError
from cnnlab.config.yaml_safety import load_yaml

DEFAULT_OPTIMIZERS = ("sgd", "sgd+momentum", "rmsprop", "adam", "adamw", "nadam", "adagrad")
# Named settings people ask for by name; a preset may take further keyword arguments after ':'.
PRESETS = {"sgd+momentum": ("sgd", {"momentum": 0.9})}
MAX_SLUG = 60  # run names must stay within config.NAME_PATTERN's 80 characters, with "-s<seed>" added
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
SPEC_SYNTAX = "NAME or NAME:KEY=VALUE,KEY=VALUE such as sgd:learning_rate=0.05,momentum=0.9"


@dataclass(frozen=True)
class OptimizerSpec:
    """One candidate: `label` names it in tables, plots and folder names; `name` and `kwargs` build it."""

    label: str
    name: str
    kwargs: Mapping[str, Any]

    @property
    def slug(self):
        """The label as a folder-name part: `sgd+momentum` → `sgd-momentum`; long labels end in a hash of the label."""
        slug = SLUG_UNSAFE.sub("-", self.label).strip("-._") or "optimizer"
        if len(slug) > MAX_SLUG:
            slug = f"{slug[:MAX_SLUG - 9].rstrip('-._')}-{hashlib.sha1(self.label.encode()).hexdigest()[:8]}"
        return slug



def parse_optimizer_specs(texts=()):
    """Specs from `-o` options, or the default set when there are none; the same label twice is an error."""
    specs = [parse_optimizer_spec(text) for text in (texts or DEFAULT_OPTIMIZERS)]
    seen = {}
    for spec in specs:
        if spec.label in seen:
            raise ConfigError(f"--optimizer {spec.label}", "is given twice; give each optimizer once")
        if spec.slug in seen.values():
            other = next(label for label, slug in seen.items() if slug == spec.slug)
            raise ConfigError(f"--optimizer {spec.label}", f"would share the run name {spec.slug} with {other}; write one of them differently")
        seen[spec.label] = spec.slug
    return tuple(specs)


def parse_optimizer_spec(text):
    """`adam`, `sgd+momentum` or `sgd:learning_rate=0.05,momentum=0.9` → OptimizerSpec.

    Values are read as YAML scalars, and as floats where YAML would keep a string
    (PyYAML reads `1e30` as text), so `learning_rate=1e-3` means 0.001; an integer
    learning rate is made a float, as Keras requires. Values cannot contain commas. The label is the text with spaces removed and the name lower-cased.
    """
    where = f"--optimizer {short_repr(text) if not isinstance(text, str) else text.strip()}"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(where, f"expected {SPEC_SYNTAX}")
    name, sep, args = "".join(text.split()).partition(":")
    name = name.lower()
    if not name:
        raise ConfigError(where, f"expected {SPEC_SYNTAX}")
    kwargs = {}
    parts = []
    for part in args.split(",") if sep else []:
        key, eq, value = part.partition("=")
        if not eq or not key.isidentifier() or not value:
            raise ConfigError(where, f"expected {SPEC_SYNTAX}; cannot read {short_repr(part)}")
        if key in kwargs:
            raise ConfigError(where, f"{key} is given twice")
        kwargs[key] = parse_value(value)
        if key == "learning_rate" and type(kwargs[key]) is int:
            kwargs[key] = float(kwargs[key])  # Keras refuses an int learning rate; `learning_rate=1` means 1.0
        parts.append(f"{key}={value}")
    label = name + (":" + ",".join(parts) if parts else "")
    if name in PRESETS:
        base_name, preset_kwargs = PRESETS[name]
        return OptimizerSpec(label=label, name=base_name, kwargs={**preset_kwargs, **kwargs})
    return OptimizerSpec(label=label, name=name, kwargs=kwargs)


def parse_value(text):
    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_optimizer_specs(specs):
    """Builds every optimizer once, so a bad name or keyword is reported before any training starts."""
    for spec in specs:
        try:
            builder.make_optimizer(OptimizerConfig(name=spec.name, kwargs=dict(spec.kwargs)))
        except ConfigError as exc:
            key = exc.path[len("compile.optimizer."):] if exc.path and exc.path.startswith("compile.optimizer.") else ""
            key = "" if key == "name" else key
            presets = f", or the preset{'s' if len(PRESETS) > 1 else ''} {', '.join(PRESETS)}" if "Valid names" in exc.message else ""
            raise ConfigError(f"--optimizer {spec.label}", (f"{key}: " if key else "") + exc.message + presets) from exc
