"""A sweep's search space: parsed from `sweep:` and --param, checked against the config, every mistake one line naming its path."""

import copy

import pytest
import yaml

from cnnlab.errors import ConfigError
from cnnlab.search.space import Param, Space, apply_values, grid_size, grid_values, parse_space

from conftest import TINY_DIGITS

# TINY_DIGITS with a learning rate, a dropout and a hidden dense layer to search:
# [0] Conv2D, [1] MaxPooling2D, [2] Flatten, [3] Dropout, [4] Dense 16, [5] Dense 10
BASE = TINY_DIGITS.replace("    - Flatten: {}\n", "    - Flatten: {}\n    - Dropout: {rate: 0.25}\n    - Dense: {units: 16, activation: relu}\n") + """\
compile:
  optimizer: {name: adam, learning_rate: 0.001}
"""

EXAMPLE = """\
sweep:
  params:
    compile.optimizer.learning_rate: {float: [1.0e-4, 1.0e-2], log: true}
    model.layers[0].Conv2D.filters: {int: [4, 16], step: 4}
    model.layers[3].Dropout.rate: {float: [0.0, 0.5], step: 0.25}
    model.layers[4].Dense.units: {int: [8, 64], log: true}
    train.batch_size: {choice: [16, 32, 64]}
"""


def user_config(params=None, **sweep):
    """BASE as loaded from YAML, with a sweep section of these params and settings."""
    user = yaml.safe_load(BASE)
    user["sweep"] = {**sweep, "params": params if params is not None else {"train.batch_size": {"choice": [16, 32]}}}
    return user


def error_for(user, cli_params=(), trials=None):
    with pytest.raises(ConfigError) as info:
        parse_space(user, cli_params, trials)
    return str(info.value)


# ---------------------------------------------------------------- what parses


def test_the_documented_example_parses_into_params():
    space = parse_space(yaml.safe_load(BASE + EXAMPLE))
    assert space.params == (
        Param("compile.optimizer.learning_rate", "float", low=1e-4, high=1e-2, log=True),
        Param("model.layers[0].Conv2D.filters", "int", low=4, high=16, step=4),
        Param("model.layers[3].Dropout.rate", "float", low=0.0, high=0.5, step=0.25),
        Param("model.layers[4].Dense.units", "int", low=8, high=64, log=True),
        Param("train.batch_size", "choice", choices=(16, 32, 64)),
    )


def test_defaults_come_from_the_config():
    space = parse_space(user_config())
    assert space == Space(params=space.params, metric="val_loss", direction="minimize", trials=20, sampler="tpe", pruner="median", seed=7)


def test_the_default_metric_is_the_checkpoint_monitor_and_accuracy_is_maximized():
    user = user_config()
    user["train"]["callbacks"] = {"checkpoint": {"monitor": "val_accuracy"}}
    space = parse_space(user)
    assert (space.metric, space.direction) == ("val_accuracy", "maximize")


def test_settings_given_in_the_section_win():
    space = parse_space(user_config(metric="accuracy", direction="minimize", trials=5, sampler="random", pruner="hyperband", seed=3))
    assert (space.metric, space.direction, space.trials, space.sampler, space.pruner, space.seed) == ("accuracy", "minimize", 5, "random", "hyperband", 3)


def test_null_settings_take_their_defaults_and_a_null_pruner_turns_pruning_off():
    space = parse_space(user_config(metric=None, direction=None, trials=None, sampler=None, seed=None, pruner=None))
    assert (space.metric, space.direction, space.trials, space.sampler, space.seed, space.pruner) == ("val_loss", "minimize", 20, "tpe", 7, "none")


def test_failures_in_a_row_stop_a_sweep_after_10_unless_the_section_says_otherwise():
    assert parse_space(user_config()).max_failures == 10
    assert parse_space(user_config(max_failures=3)).max_failures == 3
    assert parse_space(user_config(max_failures=None)).max_failures is None  # never: only --trials ends it


def test_choices_can_be_whole_optimizers_and_layer_lists():
    layers_a = [{"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]
    layers_b = [{"Conv2D": {"filters": 2, "kernel_size": 3}}, "Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
    params = {"compile.optimizer": {"choice": ["adam", {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9}]},
              "model.layers": {"choice": [layers_a, layers_b]}}
    space = parse_space(user_config(params))
    assert space.params[0].choices == ("adam", {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9})
    assert space.params[1].choices == (layers_a, layers_b)


def test_param_option_adds_an_entry_and_replaces_the_yaml_one_of_the_same_path():
    space = parse_space(user_config(), cli_params=["train.batch_size={choice: [8, 64]}",
                                                   "model.layers[4].Dense.units={int: [32, 256], log: true}"])
    assert space.params == (Param("train.batch_size", "choice", choices=(8, 64)),
                            Param("model.layers[4].Dense.units", "int", low=32, high=256, log=True))


def test_param_option_alone_needs_no_sweep_section():
    user = yaml.safe_load(BASE)
    space = parse_space(user, cli_params=["train.epochs={int: [1, 3]}"], trials=4)
    assert space.params == (Param("train.epochs", "int", low=1, high=3),) and space.trials == 4


def test_trials_option_replaces_the_section():
    assert parse_space(user_config(trials=5), trials=9).trials == 9


def test_integers_in_a_float_range_are_read_as_floats():
    space = parse_space(user_config({"model.layers[3].Dropout.rate": {"float": [0, 1]}}))
    assert space.params[0].low == 0.0 and isinstance(space.params[0].low, float)


# ---------------------------------------------------------------- apply_values


def test_apply_values_sets_indexed_layer_values_in_a_copy():
    user = yaml.safe_load(BASE)
    before = copy.deepcopy(user)
    trial = apply_values(user, {"model.layers[4].Dense.units": 32, "compile.optimizer.learning_rate": 0.01, "train.batch_size": 16})
    assert trial["model"]["layers"][4] == {"Dense": {"units": 32, "activation": "relu"}}
    assert trial["compile"]["optimizer"] == {"name": "adam", "learning_rate": 0.01}
    assert trial["train"]["batch_size"] == 16
    assert user == before


def test_apply_values_copies_each_value_so_trials_share_nothing():
    layers = [{"Flatten": {}}, {"Dense": {"units": 10}}]
    trial = apply_values(yaml.safe_load(BASE), {"model.layers": layers})
    trial["model"]["layers"][1]["Dense"]["units"] = 3
    assert layers[1]["Dense"]["units"] == 10


def test_apply_values_goes_through_a_bare_layer_name():
    user = yaml.safe_load(BASE.replace("    - Flatten: {}", "    - Flatten"))
    trial = apply_values(user, {"model.layers[2].Flatten": {"name": "flat"}})
    assert trial["model"]["layers"][2] == {"Flatten": {"name": "flat"}}


# ---------------------------------------------------------------- grid


def test_grid_size_multiplies_the_counts_and_lists_the_values():
    space = parse_space(user_config({"model.layers[0].Conv2D.filters": {"int": [4, 16], "step": 4},
                                     "model.layers[3].Dropout.rate": {"float": [0.0, 0.3], "step": 0.1},
                                     "train.batch_size": {"choice": [16, 32, 64]}}, sampler="grid"))
    assert grid_size(space) == 4 * 4 * 3
    assert grid_values(space.params[0]) == (4, 8, 12, 16)
    assert grid_values(space.params[1]) == (0.0, 0.1, 0.2, 0.3)
    assert space.trials == 48  # a grid without trials runs all of it


def test_an_int_range_without_step_counts_every_integer():
    space = parse_space(user_config({"train.epochs": {"int": [1, 3]}}))
    assert grid_size(space) == 3 and grid_values(space.params[0]) == (1, 2, 3)


def test_a_grid_larger_than_the_trials_says_how_large():
    params = {"model.layers[0].Conv2D.filters": {"int": [4, 64], "step": 4}, "train.batch_size": {"choice": [16, 32, 64]}}
    assert error_for(user_config(params, sampler="grid", trials=20)) == (
        "sweep.trials: the grid has 48 points but sweep.trials is 20: raise it to 48 or search fewer values")
    assert error_for(user_config(params, sampler="grid"), trials=20) == (
        "--trials: the grid has 48 points but --trials is 20: raise it to 48 or search fewer values")


def test_a_grid_past_the_most_trials_is_refused_without_listing_it():
    params = {"model.layers[4].Dense.units": {"int": [1, 60000]}, "train.batch_size": {"choice": [16, 32]}}
    assert error_for(user_config(params, sampler="grid")) == (
        "sweep.trials: the grid has 120,000 points, more than the 100,000 trials a sweep may have: search fewer values")


def test_a_float_range_without_step_is_not_griddable():
    assert error_for(user_config({"compile.optimizer.learning_rate": {"float": [1.0e-4, 1.0e-2], "log": True}}, sampler="grid")) == (
        "sweep.params.compile.optimizer.learning_rate: sampler grid needs a finite set of values: "
        "give the float range a step or use choice, received {float: [0.0001, 0.01], log: true}")


# ---------------------------------------------------------------- bad input, one line each

P = "sweep.params."


@pytest.mark.parametrize("params, expected", [
    ({"model.layers[0].Conv2D.filtres": {"int": [4, 16]}},
     P + "model.layers[0].Conv2D.filtres: not in the config (did you mean model.layers[0].Conv2D.filters?)"),
    ({"model.layers[9].Dense.units": {"int": [4, 16]}},
     P + "model.layers[9].Dense.units: not in the config: model.layers has 6 entries, [0] to [5]"),
    ({"compile.optimizer.beta_1": {"float": [0.8, 0.99]}},
     P + "compile.optimizer.beta_1: not in the config; compile.optimizer has name, learning_rate; "
         "to search a value the config leaves to its default, write beta_1 under compile.optimizer first"),
    ({"model.layers[0].Conv2D.filters": {"float": [4.0, 16.0]}},
     P + "model.layers[0].Conv2D.filters: a float range needs a real number here, but the config has an integer 4 "
         "(use int: [low, high] for an integer, or write 4.0 in the config if it is a real number)"),
    ({"compile.optimizer.learning_rate": {"int": [1, 2]}},
     P + "compile.optimizer.learning_rate: an int range needs an integer here, but the config has a number 0.001 (use float: [low, high] for a real number)"),
    ({"data.image_size": {"int": [4, 8]}}, P + "data.image_size: an int range needs an integer here, but the config has null"),
    ({"train.shuffle": {"int": [0, 1]}}, P + "train.shuffle: an int range needs an integer here, but the config has a boolean True"),
    ({"train.batch_size": {"choice": []}}, P + "train.batch_size: choice expected a non-empty list of values such as [16, 32, 64], received []"),
    ({"train.batch_size": {"choice": 16}}, P + "train.batch_size: choice expected a non-empty list of values such as [16, 32, 64], received 16"),
    ({"train.batch_size": {"choice": [16, 32, 16]}}, P + "train.batch_size: choice lists 16 twice, received [16, 32, 16]"),
    ({"train.batch_size": {"choice": [16, 32], "log": True}}, P + "train.batch_size: step and log are for int and float ranges, not choice, received {'choice': [16, 32], 'log': True}"),
    ({"train.batch_size": {"int": [64, 16]}}, P + "train.batch_size: int expected low <= high, received [64, 16]"),
    ({"train.batch_size": {"int": [16]}}, P + "train.batch_size: int expected [low, high], two integers such as [8, 64], received [16]"),
    ({"train.batch_size": {"int": [16, 32.5]}}, P + "train.batch_size: int expected [low, high], two integers such as [8, 64], received [16, 32.5]"),
    ({"model.layers[3].Dropout.rate": {"float": [0.0, "half"]}},
     P + "model.layers[3].Dropout.rate: float expected [low, high], two numbers such as [0.0, 0.5], received [0.0, 'half']"),
    ({"model.layers[3].Dropout.rate": {"float": [0.0, 0.5], "log": True}}, P + "model.layers[3].Dropout.rate: a log range needs low > 0, received [0.0, 0.5]"),
    ({"model.layers[3].Dropout.rate": {"float": [0.1, 0.5], "log": "yes"}}, P + "model.layers[3].Dropout.rate: log expected true or false, received 'yes'"),
    ({"train.batch_size": {"int": [16, 64], "step": 0}}, P + "train.batch_size: step expected a positive integer, received 0"),
    ({"model.layers[3].Dropout.rate": {"float": [0.0, 0.5], "step": -0.1}}, P + "model.layers[3].Dropout.rate: step expected a positive number, received -0.1"),
    ({"train.batch_size": {"int": [16, 64], "step": 16, "log": True}},
     P + "train.batch_size: step and log cannot be combined: a log range has no fixed step; remove one"),
    ({"train.batch_size": {"int": [16, 60], "step": 16}},
     P + "train.batch_size: high - low must be a whole number of steps, so that high is searched; received [16, 60] with step 16"),
    ({"train.batch_size": {"int": [16, 64], "stepp": 16}},
     P + "train.batch_size: unknown key 'stepp' (did you mean step?); valid keys of a space: int, float, choice, step, log"),
    ({"train.batch_size": {"int": [16, 64], "choice": [8]}}, P + "train.batch_size: expected exactly one of int, float, choice, received {'int': [16, 64], 'choice': [8]}"),
    ({"train.batch_size": [16, 32]},
     P + "train.batch_size: expected a space such as {int: [8, 64]}, {float: [0.0001, 0.01], log: true} or {choice: [16, 32]}, received a list [16, 32]"),
    ({"train.batch_size": {"choice": [0, 32]}},
     P + "train.batch_size: choice 0 makes the config invalid: train.batch_size: expected an integer >= 1, received 0"),
    ({"train.validation_split": {"float": [0.1, 0.95]}},
     P + "train.validation_split: high 0.95 makes the config invalid: train.validation_split: expected a number <= 0.9, received 0.95"),
    ({"compile.optimizer": {"choice": ["adam", {"learning_rate": 0.1}]}},
     P + "compile.optimizer: choice {'learning_rate': 0.1} makes the config invalid: compile.optimizer: expected a name such as adam or a mapping {name: adam, learning_rate: 0.001}, received {'learning_rate': 0.1}"),
    ({"model.layers": {"choice": [[]]}},
     P + "model.layers: choice [] makes the config invalid: model.layers: expected a non-empty list of layers such as [{Flatten: {}}, {Dense: {units: 10}}], received a list"),
    ({"model.layers": {"choice": [[{"Flatten": {}}, {"Dense": {"units": 10}}]]}, "model.layers[0].Conv2D.filters": {"int": [4, 8]}},
     P + "model.layers[0].Conv2D.filters: lies inside model.layers, which is searched too; search one of them"),
    ({"sweep.trials": {"int": [1, 3]}}, P + "sweep.trials: a sweep cannot search its own settings; name a value outside sweep:"),
    ({"model..layers": {"int": [1, 3]}}, "sweep.params: expected a path such as train.epochs or model.layers[0].Conv2D.filters, received 'model..layers'"),
    ({}, ("sweep.params: is empty: name at least one config value to search, here or with --param PATH=SPACE, "
          "e.g. compile.optimizer.learning_rate: {float: [0.0001, 0.01], log: true}")),
])
def test_a_bad_param_is_one_line_naming_its_path(params, expected):
    message = error_for(user_config(params))
    assert message == expected
    assert "\n" not in message


@pytest.mark.parametrize("settings, expected", [
    ({"sampler": "bayes"}, "sweep.sampler: expected one of tpe, random, grid, received 'bayes'"),
    ({"pruner": "medain"}, "sweep.pruner: expected one of median, hyperband, none (did you mean median?), received 'medain'"),
    ({"direction": "max"}, "sweep.direction: expected one of maximize, minimize, received 'max'"),
    ({"trials": 0}, "sweep.trials: expected an integer >= 1, received 0"),
    ({"trials": "many"}, "sweep.trials: expected an integer, received a string 'many'"),
    ({"seed": -1}, "sweep.seed: expected an integer >= 0, received -1"),
    ({"metric": "val_acc"}, "sweep.metric: expected a value the runs log: one of loss, accuracy, val_loss, val_accuracy (did you mean val_accuracy?), received 'val_acc'"),
    ({"trails": 20}, "sweep.trails: unknown key (did you mean trials?); valid keys here: metric, direction, trials, sampler, pruner, seed, max_failures, cv_folds, params"),
    ({"max_failures": 0}, "sweep.max_failures: expected an integer >= 1, received 0"),
    ({"max_failures": True}, "sweep.max_failures: expected an integer, received a boolean True"),
])
def test_a_bad_setting_is_one_line_naming_its_key(settings, expected):
    assert error_for(user_config(**settings)) == expected


def test_params_must_be_a_mapping():
    user = user_config()
    user["sweep"]["params"] = ["train.batch_size"]
    assert error_for(user) == ("sweep.params: expected a mapping of config paths to spaces such as "
                               "{train.batch_size: {choice: [16, 32]}}, received a list ['train.batch_size']")


@pytest.mark.parametrize("option, expected", [
    ("train.epochs", "--param: expected PATH=SPACE such as 'train.batch_size={choice: [16, 32]}', received 'train.epochs'"),
    ("train.epochs=", "--param: expected PATH=SPACE such as 'train.batch_size={choice: [16, 32]}', received 'train.epochs='"),
    ("train.epochs={int: [1, 3]", "--param train.epochs: SPACE is not valid YAML (expected ',' or '}', but got '<stream end>'), received '{int: [1, 3]'"),
    ("train.epoch={int: [1, 3]}", "--param train.epoch: not in the config (did you mean train.epochs?)"),
    ("train.epochs={int: [3, 1]}", "--param train.epochs: int expected low <= high, received [3, 1]"),
])
def test_a_bad_param_option_is_one_line_naming_it(option, expected):
    assert error_for(user_config(), cli_params=[option]) == expected


def test_a_bad_base_config_is_reported_before_the_space():
    user = user_config({"train.batch_size": {"choice": []}})
    user["train"]["epochs"] = 0
    assert error_for(user) == "train.epochs: expected an integer >= 1, received 0"


def test_paths_and_space_import_neither_tensorflow_nor_optuna():
    import subprocess
    import sys

    code = "import sys, cnnlab.config.keypaths, cnnlab.search.space; print('tensorflow' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
