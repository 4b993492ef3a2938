"""Config paths as error messages write them: parsed, read and set in the plain YAML config, a miss naming the nearest."""

import pytest
import yaml

from cnnlab.errors import ConfigError
from cnnlab.config.keypaths import first_difference, flatten, format_path, get_value, has_path, parse_path, set_value

from conftest import TINY_DIGITS


@pytest.fixture
def config():
    return yaml.safe_load(TINY_DIGITS)


def error_of(function, *args, **kwargs):
    with pytest.raises(ConfigError) as info:
        function(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("text, parts", [
    ("train.batch_size", ("train", "batch_size")),
    ("model.layers[0].Conv2D.filters", ("model", "layers", 0, "Conv2D", "filters")),
    ("model.layers", ("model", "layers")),
    ("model.input_shape[2]", ("model", "input_shape", 2)),
    ("seed", ("seed",)),
])
def test_paths_parse_and_format_back(text, parts):
    assert parse_path(text) == parts
    assert format_path(parts) == text


@pytest.mark.parametrize("text", ["", "train..epochs", ".train", "train.", "model.layers[x]", "model.layers[-1]", "[0]", "a b", "model.layers[0"])
def test_malformed_paths_are_one_line_errors(text):
    assert error_of(parse_path, text, where="--set") == (
        f"--set: expected a path such as train.epochs or model.layers[0].Conv2D.filters, received {text!r}")


def test_get_reads_nested_and_indexed_values(config):
    assert get_value(config, "model.layers[0].Conv2D.filters") == 4
    assert get_value(config, "model.layers[3]") == {"Dense": {"units": 10, "activation": "softmax"}}
    assert get_value(config, "model.input_shape[1]") == 8


def test_get_reads_through_the_yaml_shorthands(config):
    config["model"]["layers"][2] = "Flatten"
    config["compile"] = {"optimizer": "adam"}
    assert get_value(config, "model.layers[2].Flatten") == {}
    assert get_value(config, "compile.optimizer.name") == "adam"
    assert config["model"]["layers"][2] == "Flatten"  # reading changes nothing


def test_a_misspelt_key_names_the_nearest_valid_path(config):
    assert error_of(get_value, config, "model.layers[0].Conv2D.filtres") == (
        "model.layers[0].Conv2D.filtres: not in the config (did you mean model.layers[0].Conv2D.filters?)")


def test_a_misspelt_middle_key_suggests_the_whole_corrected_path(config):
    assert error_of(get_value, config, "model.layer[0].Conv2D.filters") == (
        "model.layer[0].Conv2D.filters: not in the config (did you mean model.layers[0].Conv2D.filters?)")


def test_a_key_with_no_near_match_lists_the_keys_there(config):
    assert error_of(get_value, config, "model.layers[3].Dense.learning_rate") == (
        "model.layers[3].Dense.learning_rate: not in the config; model.layers[3].Dense has units, activation")


def test_an_index_past_the_end_says_how_many_entries_there_are(config):
    assert error_of(get_value, config, "model.layers[4].Dense.units") == (
        "model.layers[4].Dense.units: not in the config: model.layers has 4 entries, [0] to [3]")


def test_a_key_below_a_plain_value_is_a_miss(config):
    assert error_of(get_value, config, "seed.value") == "seed.value: not in the config: seed is an integer 7, not a mapping"


def test_where_replaces_the_path_in_the_error(config):
    assert error_of(get_value, config, "train.epoch", where="--param train.epoch") == (
        "--param train.epoch: not in the config (did you mean train.epochs?)")


def test_has_path(config):
    assert has_path(config, "train.batch_size")
    assert not has_path(config, "train.batch")
    assert not has_path(config, "model.layers[7]")


def test_set_replaces_an_indexed_layer_argument(config):
    set_value(config, "model.layers[3].Dense.units", 128)
    assert config["model"]["layers"][3] == {"Dense": {"units": 128, "activation": "softmax"}}


def test_set_creates_missing_sections_and_keys_as_set_does(config):
    set_value(config, "train.callbacks.tensorboard", {})
    set_value(config, "data.image_size", [8, 8])
    assert config["train"]["callbacks"] == {"tensorboard": {}}
    assert config["data"]["image_size"] == [8, 8]


def test_set_turns_a_null_into_a_mapping(config):
    config["train"]["callbacks"] = {"reduce_lr": None}
    set_value(config, "train.callbacks.reduce_lr.factor", 0.5)
    assert config["train"]["callbacks"]["reduce_lr"] == {"factor": 0.5}


def test_set_writes_out_the_shorthands_it_goes_through(config):
    config["model"]["layers"][2] = "Flatten"
    config["compile"] = {"optimizer": "adam"}
    set_value(config, "model.layers[2].Flatten.name", "flat")
    set_value(config, "compile.optimizer.learning_rate", 0.01)
    assert config["model"]["layers"][2] == {"Flatten": {"name": "flat"}}
    assert config["compile"]["optimizer"] == {"name": "adam", "learning_rate": 0.01}


def test_set_never_creates_a_list_entry_or_a_second_layer_class(config):
    assert error_of(set_value, config, "model.layers[4].Dense.units", 1) == (
        "model.layers[4].Dense.units: not in the config: model.layers has 4 entries, [0] to [3]")
    assert error_of(set_value, config, "model.layers[3].Conv2D.filters", 1) == (
        "model.layers[3].Conv2D.filters: not in the config; model.layers[3] has Dense")
    assert error_of(set_value, config, "model.layer[3].Dense.units", 1) == (
        "model.layer[3].Dense.units: not in the config (did you mean model.layers[3].Dense.units?)")
    assert "layer" not in config["model"]


def test_set_below_a_plain_value_keeps_its_message(config):
    assert error_of(set_value, config, "seed.x", 1) == "seed: cannot set seed.x: this value is not a mapping"


def test_set_with_must_exist_refuses_a_new_key(config):
    assert error_of(set_value, config, "train.epoch", 3, must_exist=True) == "train.epoch: not in the config (did you mean train.epochs?)"
    set_value(config, "train.epochs", 3, must_exist=True)
    assert config["train"]["epochs"] == 3


def test_first_difference_names_the_changed_value_by_its_path():
    a = {"train": {"epochs": 5, "batch_size": 32}, "model": {"layers": [{"Dense": {"units": 4}}]}}
    b = {"train": {"epochs": 5, "batch_size": 64}, "model": {"layers": [{"Dense": {"units": 4}}]}}
    assert first_difference(a, a) is None
    assert first_difference(a, b) == "train.batch_size"
    assert first_difference({"sweep": {"x.y[0]": [1]}}, {"sweep": {"x.y[0]": [2]}}) == "sweep.x.y[0]"
    assert first_difference(a, {**a, "seed": 1}) == "seed"  # a key only one side has
    assert first_difference(1, 2) == ""  # the values themselves differ


def test_flatten_gives_one_path_per_setting_that_reads_back_with_get_value():
    config = {"model": {"layers": [{"Conv2D": {"filters": 8, "kernel_size": [3, 3]}}, {"Flatten": {}}]},
              "train": {"epochs": 2, "callbacks": {"tensorboard": {}, "reduce_lr": None}}}
    flat = flatten(config)
    assert flat == {"model.layers[0].Conv2D.filters": 8, "model.layers[0].Conv2D.kernel_size": [3, 3],
                    "model.layers[1].Flatten": {}, "train.epochs": 2,
                    "train.callbacks.tensorboard": {}, "train.callbacks.reduce_lr": None}
    assert all(get_value(config, path) == value for path, value in flat.items())
