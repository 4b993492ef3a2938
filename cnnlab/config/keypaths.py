"""Paths to config values, written as error messages write them: `train.batch_size`, `model.layers[0].Conv2D.filters`.

One syntax for `--set`, a sweep's parameters and error messages: dotted keys, `[N]` for a
list entry. Works on the plain config as YAML gives it (dicts, lists, scalars), so it
imports neither TensorFlow nor the config's dataclasses.
"""

import re

from cnnlab.errors import ConfigError, closest, did_you_mean, short_repr, type_name

EXAMPLE = "train.epochs or model.layers[0].Conv2D.filters"
KEY = re.compile(r"[^.\[\]\s=]+")
INDEX = re.compile(r"\[(\d+)\]")
MISSING = object()


def parse_path(path, where=None):
    """`model.layers[0].Conv2D.filters` → ('model', 'layers', 0, 'Conv2D', 'filters'); a tuple is returned as it is.

    `where` names the source in the error (`--set`, `sweep.params`); by default the path itself.
    """
    if isinstance(path, tuple):
        return path
    if not isinstance(path, str):
        raise ConfigError(where, f"expected a path such as {EXAMPLE}, received {type_name(path)} {short_repr(path)}")
    parts, pos = [], 0
    while True:
        key = KEY.match(path, pos)
        if not key:
            break
        parts.append(key.group())
        pos = key.end()
        while index := INDEX.match(path, pos):
            parts.append(int(index.group(1)))
            pos = index.end()
        if pos == len(path):
            return tuple(parts)
        if path[pos] != ".":
            break
        pos += 1
    raise ConfigError(where, f"expected a path such as {EXAMPLE}, received {short_repr(path)}")


def format_path(parts):
    """The inverse of parse_path: ('model', 'layers', 0) → `model.layers[0]`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def get_value(config, path, where=None):
    """The value at `path`; a path not in `config` is a ConfigError naming the nearest one that is."""
    parts = parse_path(path, where)
    node = config
    for i, part in enumerate(parts):
        node = expand(parts[:i], node)
        child = child_of(node, part)
        if child is MISSING:
            raise miss(config, parts, i, where)
        node = child
    return node


def has_path(config, path):
    """Whether `path` names a value in `config` (a malformed path is still an error)."""
    parts = parse_path(path)
    try:
        get_value(config, parts)
    except ConfigError:
        return False
    return True


def set_value(config, path, value, must_exist=False, where=None):
    """Sets the value at `path` in `config`, in place.

    Without `must_exist`, missing mappings on the way (or nulls, as a disabled callback) are
    created and the last key may be new, as `--set train.callbacks.tensorboard={}` needs;
    list entries and a layer's class name are never created. With it, the path must already exist.
    """
    parts = parse_path(path, where)
    node = config
    for i, part in enumerate(parts[:-1]):
        child = child_of(node, part)
        expanded = expand(parts[: i + 1], child)
        if expanded is not child:  # the shorthand written out, so that a key can be set inside it
            node[part] = child = expanded
        creatable = isinstance(parts[i + 1], str) and can_create(parts[:i], node, part)  # a mapping, never a list
        if not must_exist and (child is None or child is MISSING) and creatable:
            node[part] = child = {}
        if child is MISSING:
            raise miss(config, parts, i, where)
        if not isinstance(child, (dict, list)):
            raise ConfigError(format_path(parts[: i + 1]), f"cannot set {format_path(parts)}: this value is not a mapping")
        node = child
    last = parts[-1]
    if child_of(node, last) is MISSING and (must_exist or not can_create(parts[:-1], node, last)):
        raise miss(config, parts, len(parts) - 1, where)
    node[last] = value


# ---------------------------------------------------------------- walking


def child_of(node, part):
    """`node[part]`, or MISSING where `node` has no such key or entry."""
    if isinstance(part, int):
        return node[part] if isinstance(node, list) and part < len(node) else MISSING
    return node.get(part, MISSING) if isinstance(node, dict) else MISSING


def expand(parts, node):
    """The mapping a YAML shorthand at `parts` stands for: a bare layer `Flatten` is `{Flatten: {}}`, `optimizer: adam` is `{name: adam}`."""
    if isinstance(node, str):
        if is_layer(parts):
            return {node: {}}
        if parts == ("compile", "optimizer"):
            return {"name": node}
    return node


LAYER_LISTS = (("model", "layers"), ("model", "augmentation"))


def is_layer(parts):
    """Whether `parts` names one entry of `model.layers` or `model.augmentation`, a one-key mapping whose key is the layer's class."""
    return len(parts) == 3 and parts[:2] in LAYER_LISTS and isinstance(parts[2], int)


def can_create(parts, node, key):
    """A new key may go into a mapping, but not into a layer entry: that would be a second class name."""
    return isinstance(node, dict) and isinstance(key, str) and not is_layer(parts)


def miss(config, parts, i, where):
    """The error for `parts[i]` not being in the config, naming the nearest valid path or what is there."""
    label = where or format_path(parts)
    parent = format_path(parts[:i]) or "the config"
    node = expand(parts[:i], get_value(config, parts[:i]) if i else config)
    part = parts[i]
    if isinstance(node, list) and isinstance(part, int):
        entries = f"{len(node)} entries, [0] to [{len(node) - 1}]" if node else "no entries"
        return ConfigError(label, f"not in the config: {parent} has {entries}")
    if not isinstance(node, (dict, list)):
        return ConfigError(label, f"not in the config: {parent} is {type_name(node)} {short_repr(node)}, not a mapping")
    if isinstance(node, list):
        return ConfigError(label, f"not in the config: {parent} is a list; expected an entry such as {parent}[0]")
    keys = [k for k in node if isinstance(k, str)]
    nearest = nearest_path(config, parts, i, keys)
    if nearest:
        return ConfigError(label, f"not in the config{did_you_mean(nearest)}")
    listed = ", ".join(keys) if keys else "no keys"
    return ConfigError(label, f"not in the config; {parent} has {listed}")


def nearest_path(config, parts, i, keys):
    """The valid path closest to `parts`, judged where it went wrong: its `i`-th part against the keys there.

    Comparing one key with its siblings, not whole paths, keeps the suggestion apt: a long
    shared prefix would make any path under `compile.optimizer` look close.
    """
    key = closest(parts[i], keys)
    if key is None:
        return None
    fixed = parts[:i] + (key,) + parts[i + 1:]
    return format_path(fixed) if has_path(config, fixed) else format_path(parts[:i] + (key,))


def first_difference(a, b, path=()):
    """The path (as `format_path` writes it) of the first difference between two JSON values; None when equal.

    Mappings are walked key by key; anything else is compared whole, so a changed list
    is named by its own path. `()` (formatted as "") means the values differ at the top.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), (*path, key))
            if found is not None:
                return found
        return None
    return None if a == b else format_path(path)


def flatten(value, path=()):
    """A config as {path: value}, one entry per setting, paths as `format_path` writes them.

    Mappings are walked key by key and lists of mappings (the layers) entry by entry, so
    `model.layers[0].Conv2D.filters` is a path of its own; a list of plain values
    (`kernel_size: [3, 3]`) and an empty mapping (`tensorboard: {}`) are one value each.
    This is how runs are lined up setting by setting: TensorBoard's HParams, MLflow's
    params, `cnnlab runs --plot`.
    """
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        items = enumerate(value)
    else:
        return {format_path(path): value}
    flat = {}
    for key, child in items:
        flat.update(flatten(child, (*path, key)))
    return flat
