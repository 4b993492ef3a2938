"""One rule for which logged values are better higher: the checkpoint's best epoch and a sweep's default direction agree."""

import pytest

from cnnlab.training.callbacks import best_epoch_of
from cnnlab.config.metric_names import accuracy_key, maximized
from cnnlab.search.space import default_direction


@pytest.mark.parametrize("name", ["accuracy", "val_acc", "val_sparse_categorical_accuracy", "auc", "val_auc", "fmeasure_acc",
                                  "val_fmeasure"])
def test_accuracies_aucs_and_fmeasures_are_maximized_everywhere(name):
    assert maximized(name)
    assert default_direction(name) == "maximize"
    assert best_epoch_of({name: [0.2, 0.9, 0.5]}, name) == 2


@pytest.mark.parametrize("name", ["loss", "val_loss", "val_mean_squared_error", "val_crossentropy"])
def test_losses_and_errors_are_minimized_everywhere(name):
    assert not maximized(name)
    assert default_direction(name) == "minimize"
    assert best_epoch_of({name: [0.2, 0.9, 0.1]}, name) == 3


def test_accuracy_key_finds_the_name_the_config_compiled_with():
    assert accuracy_key({"loss": 1, "val_acc": 0.5}, prefix="val_") == "val_acc"
    assert accuracy_key({"loss": 1, "top_k_categorical_accuracy": 0.5}) is None
