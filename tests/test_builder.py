"""Configs become Keras models with the parameter counts of the seeds; mistakes are named at their path."""

import pytest

from cnnlab.model.builder import count_params, validate
from cnnlab.config.experiment import config_from_text, load_config
from cnnlab.errors import ConfigError

from conftest import CONFIGS, TINY_DIGITS


@pytest.mark.parametrize("config_name, parameters", [
    ("fashion_mnist_cnn.yaml", 333_526),
    ("mnist_3conv.yaml", 93_322),
    ("lenet5.yaml", 61_706),
    ("rgb100_binary.yaml", 35_900_130),
    ("mnist_mlp.yaml", 16_330),
    ("digits_cnn.yaml", 85_066),
])
def test_shipped_configs_have_the_seed_parameter_counts(config_name, parameters):
    model = validate(load_config(CONFIGS / config_name))
    assert count_params(model) == parameters


def test_the_model_follows_the_config_layer_by_layer():
    model = validate(config_from_text(TINY_DIGITS))
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    assert model.input_shape == (None, 8, 8, 1)
    assert model.output_shape == (None, 10)
    assert model.optimizer.__class__.__name__ == "Adam"


def layers_error(layers_yaml, extra=""):
    text = TINY_DIGITS.split("  layers:")[0] + "  layers:\n" + layers_yaml + TINY_DIGITS.split("    - Dense: {units: 10, activation: softmax}\n")[-1] + extra
    with pytest.raises(ConfigError) as info:
        validate(config_from_text(text))
    return str(info.value)


def test_unknown_layer_lists_the_closest_keras_names():
    message = layers_error("    - Conv2d: {filters: 4}\n")
    assert message.startswith("model.layers[0]: unknown Keras layer 'Conv2d'.")
    assert "Closest: Conv2D" in message


def test_lambda_and_dotted_paths_are_refused():
    assert "Lambda layers and custom objects are not allowed" in layers_error("    - Lambda: {function: print}\n")
    assert "not a Python path" in layers_error("    - os.system: {}\n")


def test_misspelt_argument_is_named_with_a_suggestion():
    message = layers_error("    - Conv2D: {filters: 4, kernel_sise: 3}\n")
    assert message.startswith("model.layers[0].Conv2D.kernel_sise: unknown argument of Conv2D (did you mean kernel_size?)")


def test_wrong_argument_value_is_narrowed_to_its_key():
    assert layers_error("    - Conv2D: {filters: 4, kernel_size: abc}\n").startswith("model.layers[0].Conv2D.kernel_size: ")
    assert layers_error("    - Conv2D: {filters: 4, kernel_size: 3, activation: relux}\n").startswith("model.layers[0].Conv2D.activation: ")


def test_too_many_poolings_name_the_layer_that_cannot_take_its_input():
    pools = "".join("    - MaxPooling2D: {pool_size: 2}\n" for _ in range(4))
    message = layers_error(pools)
    assert message.startswith("model.layers[3].MaxPooling2D")
    assert "cannot take its input of shape (None, 1, 1, 1)" in message


@pytest.mark.parametrize("compile_yaml, expected", [
    ("compile: {optimizer: adamm}", "compile.optimizer.name: unknown optimizer 'adamm'. Did you mean adam?"),
    ("compile: {optimizer: {name: adam, lr: 0.1}}", "compile.optimizer.lr: unknown argument of Adam"),
    ("compile: {optimizer: {name: adam, learning_rate: fast}}", "compile.optimizer.learning_rate: "),
    ("compile: {loss: cross_entropy}", "compile.loss: unknown loss 'cross_entropy'"),
    ("compile: {metrics: [acuracy]}", "compile.metrics[0]: unknown metric 'acuracy'. Did you mean accuracy?"),
])
def test_compile_mistakes_are_named(compile_yaml, expected):
    with pytest.raises(ConfigError) as info:
        validate(config_from_text(TINY_DIGITS + compile_yaml + "\n"))
    assert str(info.value).startswith(expected)


def test_callback_arguments_are_checked_against_keras():
    text = TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {early_stopping: {patiense: 3}}")
    with pytest.raises(ConfigError, match=r"^train.callbacks.early_stopping.patiense: unknown argument of EarlyStopping \(did you mean patience\?\)"):
        validate(config_from_text(text))
    text = TINY_DIGITS.replace("  batch_size: 64", "  batch_size: 64\n  callbacks: {checkpoint: {filepath: /tmp/x.keras}}")
    with pytest.raises(ConfigError, match=r"^train.callbacks.checkpoint.filepath: is set by cnnlab"):
        validate(config_from_text(text))


def test_an_integer_learning_rate_is_taken_as_the_float_keras_expects():
    model = validate(config_from_text(TINY_DIGITS + "compile: {optimizer: {name: sgd, learning_rate: 1, momentum: 0}}\n"))
    assert float(model.optimizer.learning_rate.numpy()) == 1.0
    assert model.optimizer.momentum == 0.0
