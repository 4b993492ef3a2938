"""The command line as a user meets it: exit codes, one-line errors, no tracebacks, nothing half-made."""

import subprocess
import sys

import pytest


from conftest import CONFIGS, TINY_DIGITS, assert_one_line_error
from conftest import run_cli as run


def test_help_lists_the_commands_without_importing_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from cnnlab.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.exit_code, 'tensorflow' in sys.modules, 'train' in r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "True"]


def test_check_prints_the_summary_and_parameter_count():
    result = run("check", CONFIGS / "lenet5.yaml")
    assert result.exit_code == 0, result.output
    assert "conv2d_2 (Conv2D)" in result.output
    assert result.output.strip().endswith("lenet5.yaml: OK, 61,706 parameters")


@pytest.mark.parametrize("config_name, count", [("fashion_mnist_cnn.yaml", "333,526"), ("rgb100_binary.yaml", "35,900,130")])
def test_check_shipped_configs(config_name, count):
    result = run("check", CONFIGS / config_name)
    assert result.output.strip().endswith(f"OK, {count} parameters")


def test_check_reports_a_bad_config_in_one_line(write_config):
    path = write_config(TINY_DIGITS.replace("kernel_size: 3", "kernel_size: abc"))
    assert_one_line_error(run("check", path), f"{path}: model.layers[0].Conv2D.kernel_size: ")


def test_check_reports_yaml_syntax_errors_with_the_line(write_config):
    path = write_config("model: [\n")
    assert_one_line_error(run("check", path), f"{path}: line 2, column 1: YAML syntax error")


def test_check_missing_config_file(tmp_path):
    assert_one_line_error(run("check", tmp_path / "none.yaml"), "config file not found")


def test_debug_shows_the_traceback(write_config):
    path = write_config(TINY_DIGITS.replace("Conv2D", "Conv2d", 1))
    result = run("--debug", "check", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.splitlines()[-1].startswith(f"Error: {path}: model.layers[0]: unknown Keras layer 'Conv2d'. Closest: Conv2D")


def test_debug_shows_the_keras_error_behind_a_one_line_error(write_config):
    path = write_config(TINY_DIGITS.replace("padding: same", "padding: bogus"))
    # Keras prints its allowed values as a Python set, whose order changes with each process's hash seed
    lines = {f"Error: {path}: model.layers[0].Conv2D.padding: The `padding` argument must be a list/tuple or one of "
             f"{{{allowed}}}. Received: bogus" for allowed in ("'valid', 'same'", "'same', 'valid'")}
    plain = run("check", path)
    assert plain.exit_code == 2 and len(plain.stderr.splitlines()) == 1 and plain.stderr.splitlines()[0] in lines
    debug = run("--debug", "check", path)
    assert debug.exit_code == 2
    keras_part, _, cnnlab_part = debug.stderr.partition("The above exception was the direct cause of the following exception:")
    assert "keras/src/layers/convolutional/" in keras_part and "ValueError: The `padding` argument must be" in keras_part
    assert 'cnnlab/model/builder.py", line' in cnnlab_part and debug.stderr.splitlines()[-1] in lines


def test_set_overrides_the_config_and_is_validated(write_config):
    path = write_config(TINY_DIGITS)
    assert_one_line_error(run("check", path, "--set", "train.batch_size=0"), f"{path}: train.batch_size: expected an integer >= 1")
    result = run("check", path, "--set", "model.input_shape=[16, 16, 1]", "--set", "compile.optimizer=sgd")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"{path}: OK, 2,610 parameters")  # 690 at the config's own 8x8


def test_set_reaches_a_layer_by_its_index():
    result = run("check", CONFIGS / "digits_cnn.yaml", "--set", "model.layers[4].Dense.units=128")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("digits_cnn.yaml: OK, 151,306 parameters")  # 85,066 with its own 64 units


def test_set_of_a_layer_that_is_not_there_names_the_nearest_path():
    path = CONFIGS / "digits_cnn.yaml"
    assert_one_line_error(run("check", path, "--set", "model.layers[4].Dens.units=128"),
                          f"{path}: model.layers[4].Dens.units: not in the config (did you mean model.layers[4].Dense.units?)", exact=True)
    assert_one_line_error(run("check", path, "--set", "model.layers[7].Dense.units=128"),
                          f"{path}: model.layers[7].Dense.units: not in the config: model.layers has 7 entries, [0] to [6]", exact=True)


def test_check_validates_a_sweep_section_and_summarizes_it(write_config):
    sweep = "sweep:\n  trials: 6\n  params:\n    train.batch_size: {choice: [16, 32]}\n    model.layers[0].Conv2D.filters: {int: [2, 8], step: 2}\n"
    path = write_config(TINY_DIGITS + sweep)
    result = run("check", path)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-2:] == [f"{path}: sweep of 2 values, 6 trials, tpe sampler, median pruner, minimize val_loss", f"{path}: OK, 690 parameters"]


def test_check_reports_a_bad_sweep_in_one_line(write_config):
    path = write_config(TINY_DIGITS + "sweep:\n  params:\n    model.layers[0].Conv2D.filters: {float: [2.0, 8.0]}\n")
    assert_one_line_error(run("check", path), f"{path}: sweep.params.model.layers[0].Conv2D.filters: a float range needs a real number here, "
                                                "but the config has an integer 4 (use int: [low, high] for an integer, or write 4.0 in the config if it is a real number)", exact=True)


def test_named_flags_are_validated_before_a_run_folder_exists(write_config, tmp_path):
    path = write_config(TINY_DIGITS)
    assert_one_line_error(run("train", path, "--name", "../escape", "--runs-dir", tmp_path / "runs"), f"{path}: name: expected")
    assert not (tmp_path / "runs").exists()


def test_check_refuses_options_that_change_nothing_it_prints(write_config):
    result = run("check", write_config(TINY_DIGITS), "--epochs", "3")
    assert result.exit_code == 2
    # click's own words: "No such option '--epochs'." since click 8.4, "No such option: --epochs" before
    assert result.output.splitlines()[-1] in ("Error: No such option '--epochs'.", "Error: No such option: --epochs")


def test_train_with_a_bad_config_leaves_no_run_folder(write_config, tmp_path):
    path = write_config(TINY_DIGITS.replace("units: 10", "units: 0"))
    runs_dir = tmp_path / "runs"
    result = run("train", path, "--runs-dir", runs_dir)
    assert_one_line_error(result, f"{path}: model.layers[3].Dense")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


def test_train_rejects_an_input_shape_the_data_does_not_have(write_config, tmp_path):
    path = write_config(TINY_DIGITS.replace("[8, 8, 1]", "[28, 28, 1]"))
    result = run("train", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{path}: model.input_shape: is [28, 28, 1] but the data gives images of shape [8, 8, 1]")
    assert not (tmp_path / "runs").exists()


def test_train_rejects_an_output_layer_that_does_not_match_the_classes(write_config, tmp_path):
    path = write_config(TINY_DIGITS.replace("units: 10", "units: 3"))
    result = run("train", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{path}: model.layers[3].Dense: the model outputs 3 values but the data has 10 classes")


def test_train_rejects_an_output_that_is_not_one_vector_per_image(write_config, tmp_path):
    path = write_config(TINY_DIGITS.replace("    - Flatten: {}\n", ""))  # Dense on the pooled feature maps
    result = run("train", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{path}: model.layers[2].Dense: the model outputs shape (None, 4, 4, 10), not one vector per image; "
                                  "add Flatten or GlobalAveragePooling2D before the last layer", exact=True)
    assert not (tmp_path / "runs").exists()


def test_train_with_a_missing_dataset_names_every_place_looked(write_config, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    path = write_config(TINY_DIGITS.replace("source: digits", "source: mnist").replace("[8, 8, 1]", "[28, 28, 1]"))
    result = run("train", path, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, "mnist not found; looked in ")
    assert "/usr/share/datasets/mnist" in result.output
    assert str(tmp_path / "keras") in result.output
    assert not (tmp_path / "runs").exists()


def test_train_into_an_unwritable_runs_folder_fails_cleanly(write_config, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    result = run("train", write_config(TINY_DIGITS), "--runs-dir", blocker / "runs")
    assert_one_line_error(result, "cannot create the runs folder")
