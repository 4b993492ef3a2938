"""Which logged metric is "the accuracy", answered once for run listings, training plots, comparisons and evaluation.

Keras logs a metric under the name the config compiled it with, so `metrics: [acc]` or
`[sparse_categorical_accuracy]` gives history, metrics.json and evaluation keys of those
names, not `accuracy`. Imports nothing, so `cnnlab runs` stays free of TensorFlow.
"""

# Every name under which Keras logs plain accuracy; the top-k accuracies are not "the" accuracy.
ACCURACY_NAMES = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


def accuracy_key(mapping, prefix=""):
    """The accuracy's key in `mapping` (`val_accuracy`, `sparse_categorical_accuracy`, ...); None where none was logged."""
    return next((prefix + name for name in ACCURACY_NAMES if prefix + name in (mapping or {})), None)


def is_accuracy_name(name, prefix=""):
    """Whether `name` is `prefix` + one of ACCURACY_NAMES (`val_accuracy` with prefix "val_"): a share of images
    answered right, a count that has an interval."""
    name = str(name or "")
    return name.startswith(prefix) and name[len(prefix):] in ACCURACY_NAMES


def maximized(name):
    """Whether a logged value is better higher: accuracies, AUCs and F-measures, as Keras' monitor mode "auto" judges them.

    One rule for the checkpoint's best epoch (best_epoch.best_epoch_of) and a sweep's default
    direction (space.default_direction); anything else, losses and errors, is minimized.
    """
    base = name.removeprefix("val_").lower()
    return "acc" in base or "auc" in base or base.startswith("fmeasure")
