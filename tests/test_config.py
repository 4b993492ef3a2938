"""Config loading and validation: every mistake is reported at its config path, before TensorFlow starts."""

import pytest
import yaml

from cnnlab.config.experiment import config_from_text, load_config
from cnnlab.errors import ConfigError

from conftest import TINY_DIGITS


def error_for(text, overrides=()):
    with pytest.raises(ConfigError) as info:
        config_from_text(text, overrides=overrides)
    return str(info.value)


def with_lines(*lines):
    """TINY_DIGITS with extra top-level YAML appended (later keys win in PyYAML)."""
    return TINY_DIGITS + "\n".join(lines) + "\n"


def test_defaults_are_filled_in_and_the_resolved_config_reloads_to_the_same_values():
    config = config_from_text(TINY_DIGITS)
    assert config.compile.optimizer.name == "adam"
    assert config.train.callbacks["checkpoint"] == {"monitor": "val_loss", "save_best_only": True}
    assert config.data.rescale == pytest.approx(1 / 255)
    again = config_from_text(config.to_yaml())
    assert again.raw == config.raw


def test_name_defaults_to_the_file_stem(write_config):
    path = write_config(TINY_DIGITS.replace("name: tiny\n", ""), name="my_experiment.yaml")
    assert load_config(path).name == "my_experiment"


def test_yaml_syntax_error_names_line_and_file(write_config):
    path = write_config("model:\n  layers: [\n", name="broken.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line ")
    assert "YAML syntax error" in message


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_python_object_tags_are_refused():
    message = error_for('name: !!python/object/apply:os.system ["echo hacked"]\n')
    assert "python/object" in message


def test_unknown_section_suggests_the_closest():
    assert error_for(with_lines("traning: {}")).startswith("traning: unknown key (did you mean train?)")


def test_unknown_key_inside_a_section_names_its_path():
    message = error_for(TINY_DIGITS.replace("  epochs: 2", "  epoch: 2"))
    assert message.startswith("train.epoch: unknown key (did you mean epochs?)")


def test_unknown_callback_is_rejected():
    message = error_for(TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {early_stop: {}}"))
    assert message.startswith("train.callbacks.early_stop: unknown key")


@pytest.mark.parametrize("line, path, expected", [
    ("  epochs: ten", "train.epochs", "expected an integer"),
    ("  epochs: 0", "train.epochs", "expected an integer >= 1"),
    ("  epochs: 10000000000", "train.epochs", "expected an integer <= "),
    ("  epochs: true", "train.epochs", "expected an integer"),
    ("  batch_size: -3", "train.batch_size", "expected an integer >= 1"),
    ("  validation_split: 1.5", "train.validation_split", "expected a number <= 0.9"),
    ("  validation_split: 0", "train.validation_split", "expected a number > 0"),
    ("  shuffle: maybe", "train.shuffle", "expected true or false"),
])
def test_wrong_train_values_name_their_path(line, path, expected):
    key = line.split(":")[0]
    text = "\n".join(line if l.startswith(key + ":") else l for l in TINY_DIGITS.splitlines())
    if line not in text:
        text = TINY_DIGITS.replace("  batch_size: 64", f"  batch_size: 64\n{line}")
    message = error_for(text)
    assert message.startswith(f"{path}: {expected}")


def test_input_shape_must_be_a_list_of_positive_ints():
    assert error_for(TINY_DIGITS.replace("[8, 8, 1]", "[8, -8, 1]")).startswith("model.input_shape[1]: expected an integer >= 1")
    assert error_for(TINY_DIGITS.replace("[8, 8, 1]", "eight")).startswith("model.input_shape: expected a list")


def test_a_layer_must_be_one_class_name_with_a_mapping_of_arguments():
    bad_entry = TINY_DIGITS.replace("    - Flatten: {}", "    - [Flatten, Dense]")
    assert error_for(bad_entry).startswith("model.layers[2]: expected one Keras layer")
    bad_kwargs = TINY_DIGITS.replace("    - Flatten: {}", "    - Dense: 10")
    assert error_for(bad_kwargs).startswith("model.layers[2].Dense: expected a mapping of keyword arguments")


def test_a_bare_layer_name_is_allowed():
    config = config_from_text(TINY_DIGITS.replace("    - Flatten: {}", "    - Flatten"))
    assert config.model.layers[2].type == "Flatten"
    assert config.model.layers[2].path == "model.layers[2].Flatten"


def test_unknown_data_source_suggests_the_closest():
    message = error_for(TINY_DIGITS.replace("source: digits", "source: fashion"))
    assert message.startswith("data.source: expected one of")
    assert "did you mean fashion_mnist?" in message


def test_npz_and_image_folder_need_a_path():
    assert error_for(TINY_DIGITS.replace("source: digits", "source: npz")).startswith("data.path: is required")


def test_run_names_cannot_escape_the_runs_folder():
    for name in ("../evil", "/abs", "a/b", ".hidden"):
        assert error_for(TINY_DIGITS.replace("name: tiny", f"name: '{name}'")).startswith("name: expected")


def test_checkpoint_cannot_be_turned_off_but_early_stopping_can():
    text = TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {early_stopping: null}")
    assert config_from_text(text).train.callbacks["early_stopping"] is None
    text = TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {checkpoint: false}")
    assert error_for(text).startswith("train.callbacks.checkpoint: cannot be turned off")


def test_callback_settings_merge_with_the_defaults():
    text = TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {early_stopping: {patience: 9}}")
    early = config_from_text(text).train.callbacks["early_stopping"]
    assert early == {"monitor": "val_loss", "patience": 9, "restore_best_weights": True}


def test_set_overrides_any_value_and_is_validated():
    config = config_from_text(TINY_DIGITS, overrides=["train.epochs=5", "compile.optimizer={name: sgd, learning_rate: 0.1}"])
    assert config.train.epochs == 5
    assert config.compile.optimizer.name == "sgd"
    assert config.compile.optimizer.kwargs == {"learning_rate": 0.1}
    assert error_for(TINY_DIGITS, overrides=["train.epochs=-1"]).startswith("train.epochs: expected an integer >= 1")
    assert error_for(TINY_DIGITS, overrides=["train.epochs"]).startswith("--set: expected KEY=VALUE")
    assert error_for(TINY_DIGITS, overrides=["seed.x=1"]).startswith("seed: cannot set seed.x")


def test_the_resolved_yaml_is_plain_data():
    config = config_from_text(TINY_DIGITS)
    assert yaml.safe_load(config.to_yaml())["model"]["input_shape"] == [8, 8, 1]


def test_config_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, cnnlab.config.experiment; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


SWEEP = """\
sweep:
  trials: 4
  params:
    train.batch_size: {choice: [16, 32]}
"""


def test_a_sweep_section_is_kept_in_the_resolved_yaml_and_round_trips():
    config = config_from_text(TINY_DIGITS + SWEEP)
    assert config.raw["sweep"] == {"trials": 4, "params": {"train.batch_size": {"choice": [16, 32]}}}
    assert config_from_text(config.to_yaml()).raw == config.raw


def test_the_sweep_section_defaults_to_null():
    assert config_from_text(TINY_DIGITS).raw["sweep"] is None


def test_an_unknown_sweep_key_is_named_with_the_valid_ones():
    assert error_for(TINY_DIGITS + "sweep: {trails: 4}\n") == (
        "sweep.trails: unknown key (did you mean trials?); valid keys here: metric, direction, trials, sampler, pruner, seed, max_failures, cv_folds, params")


def test_a_sweep_section_must_be_a_mapping():
    assert error_for(TINY_DIGITS + "sweep: 20\n") == (
        "sweep: expected a mapping of metric, direction, trials, sampler, pruner, seed, max_failures, cv_folds, params, or null, received an integer")


def test_a_section_that_cannot_be_null_says_what_it_holds():
    assert error_for(TINY_DIGITS + "tracking: null\n") == "tracking: expected a mapping of mlflow, experiment, received null"


def test_fine_tune_keys_are_checked_with_every_other_section():
    with_fine_tune = TINY_DIGITS + "  fine_tune: {unfreeze: 2, epochs: 1, learning_rate: 1.0e-5, epoch: 3}\n"
    assert error_for(with_fine_tune) == (
        "train.fine_tune.epoch: unknown key (did you mean epochs?); valid keys here: unfreeze, epochs, learning_rate")
    assert error_for(TINY_DIGITS + "  fine_tune: 30\n") == (
        "train.fine_tune: expected a mapping of unfreeze, epochs, learning_rate, or null, received an integer")
