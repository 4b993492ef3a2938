"""Hundreds of generated malformed configs at `cnnlab check`: each ends in exit code 2 and one line.

Every generated config is wrong by construction (a wrong type, an unknown key, a
bad nesting, a huge or negative size, a name that is not Keras'), so the property
is exact: never exit 0, never a traceback, never more than one line.

Which sections and keys exist comes from the config schema itself (config/schema.py: CONFIG_SECTIONS,
made from DEFAULTS and the section readers' key lists), so a section is fuzzed the day
it is added; the tests at the end fail when one is not.
"""

import copy

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.cli import main
from cnnlab.config.schema import (CALLBACK_NAMES, CONFIG_SECTIONS, DEFAULTS, MAX_BATCH_SIZE, MAX_EPOCHS, SOURCES,
                                  default_at, key_paths)
from cnnlab.config.keypaths import format_path
from cnnlab.model.keras_names import layer_classes, loss_names, optimizer_classes

from conftest import TINY_DIGITS, assert_one_line_error

BASE = yaml.safe_load(TINY_DIGITS)

text = st.text(max_size=30)
junk = st.one_of(text, st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=4),
                 st.dictionaries(text, st.integers(), max_size=3))
not_an_int = st.one_of(text, st.floats(allow_nan=True), st.lists(st.integers(), max_size=3), st.booleans(), st.none())


def bad_size(limit):
    """Sizes `check` must refuse: not positive, past cnnlab's own limit (the limit itself is valid), or not an int."""
    return st.one_of(st.integers(max_value=0), st.integers(min_value=limit + 1, max_value=10**30), not_an_int)


# Layer arguments go to Keras, which takes True as 1 and floats as sizes: only values no Keras layer takes.
bad_layer_size = st.one_of(st.integers(max_value=0), st.integers(min_value=10**6, max_value=10**30),
                           text.filter(lambda t: not t.strip().lstrip("+").isdigit()), st.lists(st.integers(), min_size=2, max_size=3))


def deep(depth):
    value = "x"
    for _ in range(depth):
        value = [value]
    return value


def set_path(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key] if isinstance(node, list) else node.setdefault(key, {})
    node[path[-1]] = value
    return config


# (path in the config, values that are wrong there)
WRONG_VALUES = [
    (["seed"], st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32), not_an_int.filter(lambda v: v is not None))),
    (["name"], st.one_of(text.filter(lambda t: not t[:1].isalnum() or "/" in t or len(t) > 80 or not t.isascii()), st.integers(), st.lists(text))),
    (["train", "epochs"], bad_size(MAX_EPOCHS)),
    (["train", "batch_size"], bad_size(MAX_BATCH_SIZE)),
    (["train", "validation_split"], st.one_of(st.floats(max_value=0), st.floats(min_value=0.91), text, st.lists(st.floats()), st.booleans())),
    (["train", "shuffle"], st.one_of(text, st.integers(), st.lists(st.booleans()))),
    (["model", "input_shape"], st.one_of(st.lists(st.integers(max_value=0), min_size=1, max_size=3), st.lists(st.integers(), min_size=4),
                                          st.just([]), text, st.integers(), st.lists(st.integers(min_value=20000), min_size=1, max_size=3))),
    (["model", "layers"], st.one_of(st.just([]), text, st.integers(), st.lists(st.integers(), min_size=1))),
    (["model", "layers", 0], st.one_of(text.filter(lambda t: t not in layer_classes()), st.integers(), st.lists(text, min_size=1),
                                       st.dictionaries(text.filter(lambda t: t not in layer_classes()), st.none(), min_size=1, max_size=1))),
    (["model", "layers", 0, "Conv2D", "filters"], st.one_of(bad_layer_size, st.dictionaries(text, text, min_size=1, max_size=2))),
    (["model", "layers", 0, "Conv2D", "kernel_size"], st.one_of(st.integers(max_value=0), st.integers(min_value=10**6), text.filter(lambda t: not t.strip().isdigit()), st.lists(st.integers(max_value=0), min_size=2, max_size=2))),
    (["model", "layers", 3, "Dense", "units"], bad_layer_size),
    (["model", "augmentation"], st.one_of(text, st.integers(), st.lists(st.integers(), min_size=1),
                                          st.lists(st.sampled_from(["Dense", "Flatten", "RandomCrop", "MixUp", "Lambda"]), min_size=1))),
    (["data", "source"], st.one_of(text.filter(lambda t: t not in SOURCES), st.integers(), st.lists(text))),
    (["data", "path"], st.one_of(st.integers(), st.lists(text, min_size=1), st.builds(deep, st.integers(10, 300)))),
    (["data", "rescale"], st.one_of(st.floats(max_value=0), text, st.lists(st.floats()))),
    (["compile"], st.one_of(text, st.integers(), st.lists(st.integers()), st.none())),
    (["compile", "optimizer"], st.one_of(text.filter(lambda t: t.lower() not in optimizer_classes()), st.integers(),
                                         st.dictionaries(st.sampled_from(["learning_rate", "momentum", "beta_1"]), st.integers(), min_size=1))),
    (["compile", "loss"], st.one_of(text.filter(lambda t: t not in loss_names()), st.integers(), st.lists(text))),
    (["compile", "metrics"], st.one_of(st.lists(text.filter(lambda t: t not in ("accuracy", "acc")), min_size=1), st.integers())),
    (["train"], st.one_of(text, st.integers(), st.lists(st.integers()), st.none())),
    (["data"], st.one_of(text, st.integers(), st.none())),
    (["train", "callbacks"], st.one_of(text, st.integers(), st.none(), st.lists(text))),
    (["train", "callbacks", "early_stopping"], st.one_of(text, st.integers(), st.dictionaries(text.filter(str.isidentifier), st.integers(), min_size=1))),
]

# Values no key of a config takes, whatever the key: a mapping keyed by what is no argument name (sections refuse
# the key, settings the mapping, Keras-argument mappings the name), and a list nested deeper than any setting is
# the values of such a mapping are no positive number, since train.class_weight maps class names (any text) to one
wrong_anywhere = st.one_of(st.dictionaries(text.filter(lambda t: not t.isidentifier()),
                                           junk.filter(lambda v: not (isinstance(v, (int, float)) and v > 0)), min_size=1, max_size=2),
                           st.builds(deep, st.integers(3, 40)))

# A valid value for each section that defaults to null, set before a key inside it is made wrong, so that the
# wrong value is what `check` meets there rather than the section's absence
VALID_SECTIONS = {
    ("train", "fine_tune"): {"unfreeze": 1, "epochs": 1, "learning_rate": 1.0e-5},
    ("train", "fold"): {"index": 1, "of": 3},
    ("sweep",): {"params": {"train.epochs": {"int": [1, 2]}}},
}


def base_config():
    config = copy.deepcopy(BASE)
    config["model"]["layers"][0] = {"Conv2D": dict(config["model"]["layers"][0]["Conv2D"])}
    return config


def with_section(config, section):
    """The config holding `section` (a key path), a valid one where it defaults to null."""
    if section in VALID_SECTIONS:
        set_path(config, list(section), copy.deepcopy(VALID_SECTIONS[section]))
    return config


def with_wrong_value(path, value):
    return set_path(with_section(base_config(), path[:-1]), list(path), value)


def with_unknown_key(section, key, value):
    config = with_section(base_config(), section)
    node = config
    for part in section:
        node = node.setdefault(part, {})
    node[key] = value
    return config


@st.composite
def malformed_configs(draw):
    kind = draw(st.sampled_from(["wrong_value", "unknown_key", "wrong_value", "deep", "wrong_anywhere"]))
    if kind == "wrong_value":
        path, values = draw(st.sampled_from(WRONG_VALUES))
        return set_path(base_config(), path, draw(values))
    if kind == "deep":
        return set_path(base_config(), ["model", "layers", 1], {"MaxPooling2D": {"pool_size": deep(draw(st.integers(5, 400)))}})
    if kind == "wrong_anywhere":
        return with_wrong_value(draw(st.sampled_from(key_paths())), draw(wrong_anywhere))
    section = draw(st.sampled_from(list(CONFIG_SECTIONS)))
    return with_unknown_key(section, draw(text.filter(lambda t: t not in CONFIG_SECTIONS[section])), draw(junk))


def check_refuses(config, tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert_one_line_error(CliRunner().invoke(main, ["check", str(path)]), "")


def fuzz(examples):
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@fuzz(200)
@given(config=malformed_configs())
def test_every_malformed_config_gets_exit_code_2_and_one_line(config, tmp_path):
    check_refuses(config, tmp_path)


# Each key and section of the schema in every run, not only where the draw above happens to land
@pytest.mark.parametrize("path", key_paths(), ids=format_path)
@fuzz(3)
@given(value=wrong_anywhere)
def test_every_key_of_the_schema_refuses_a_value_no_key_takes(path, value, tmp_path):
    check_refuses(with_wrong_value(path, value), tmp_path)


@pytest.mark.parametrize("section", list(CONFIG_SECTIONS), ids=lambda section: format_path(section) or "top")
@fuzz(3)
@given(data=st.data())
def test_every_section_of_the_schema_refuses_an_unknown_key(section, data, tmp_path):
    key = data.draw(text.filter(lambda t: t not in CONFIG_SECTIONS[section]))
    check_refuses(with_unknown_key(section, key, data.draw(junk)), tmp_path)


def key_paths_in(mapping, path=()):
    for key, value in mapping.items():
        yield path + (key,)
        if isinstance(value, dict):
            yield from key_paths_in(value, path + (key,))


def test_the_fuzzer_reaches_every_key_of_the_defaults():
    # DEFAULTS walked here on its own, not through config.py's walk; inside an optimizer's or a callback's
    # mapping lie Keras' keyword arguments, which registry.py checks against the class
    keras_arguments = [("compile", "optimizer"), *(("train", "callbacks", name) for name in CALLBACK_NAMES)]
    in_defaults = {path for path in key_paths_in(DEFAULTS)
                   if not any(len(path) > len(outer) and path[:len(outer)] == outer for outer in keras_arguments)}
    fuzzed = set(key_paths())
    assert sorted(map(format_path, in_defaults - fuzzed)) == []


def test_the_fuzzer_reaches_inside_every_section_that_defaults_to_null():
    # a section added with a null default needs a valid value here, or the keys inside it meet "missing ..." first
    null_sections = {section for section in CONFIG_SECTIONS if section and default_at(section) is None}
    assert sorted(map(format_path, null_sections - set(VALID_SECTIONS))) == []


def test_the_sections_the_fuzzer_starts_from_are_valid(write_config):
    path = write_config(yaml.safe_dump(with_section(base_config(), ("sweep",))))
    assert CliRunner().invoke(main, ["check", str(path)]).exit_code == 0
    # valid in itself; a config with fine_tune needs a frozen backbone too, which is checked after fine_tune's own keys
    path = write_config(yaml.safe_dump(with_section(base_config(), ("train", "fine_tune"))))
    assert_one_line_error(CliRunner().invoke(main, ["check", str(path)]), f"{path}: train.fine_tune: needs model.backbone:")


def test_yaml_too_deep_for_the_parser_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("data: {path: " + "[" * 5000 + "]" * 5000 + "}\n")
    assert_one_line_error(CliRunner().invoke(main, ["check", str(path)]), f"{path}: ")


def test_huge_layer_sizes_are_refused_before_keras_allocates(write_config):
    path = write_config(TINY_DIGITS.replace("units: 10", "units: 10000000000"))
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: {path}: model.layers[3].Dense.units: 10000000000 is larger than cnnlab allows for a layer argument (65,536)"


def test_layer_arguments_cannot_smuggle_python_callables(write_config, tmp_path):
    marker = tmp_path / "pwned"
    smuggled = (f"{{module: os, class_name: system, config: {{command: 'touch {marker}'}}, registered_name: null}}")
    for argument in (f"kernel_initializer: {smuggled}", "activation: os.system", f"activation: {smuggled}"):
        path = write_config(TINY_DIGITS.replace("units: 10, activation: softmax", f"units: 10, {argument}"))
        result = CliRunner().invoke(main, ["check", str(path)])
        assert result.exit_code == 2, argument
        assert result.output.startswith(f"Error: {path}: model.layers[3].Dense")
        assert not marker.exists()
