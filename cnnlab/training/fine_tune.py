"""The second phase of transfer learning (`train.fine_tune`): unfreeze the backbone's top layers, train on at a lower rate.

As the Keras transfer-learning guide does it. Once the first phase has ended (its epochs,
or early stopping), the top `unfreeze` layers of the backbone become trainable, except its
BatchNormalization layers, which stay frozen and, since the backbone is called with
training=False, in inference mode; the model is compiled again with `learning_rate`, and
training goes on for `epochs` more epochs, numbered on from the first phase's last.

One run: one history.csv (its `phase` column says which phase an epoch belongs to), one
best.keras, the best of both phases by the checkpoint's monitor. Early stopping and
ReduceLROnPlateau start afresh in the second phase, as they would in a second `fit`.

Resuming: before the second phase begins, the weights it starts from are saved in the
run folder with its first epoch, and only then is the first phase's backup deleted; so
an interruption anywhere resumes where it was, and ends as the uninterrupted run would.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnnlab.model import builder
from cnnlab.runtime import keras_compat
from cnnlab.rundir import files as run_files
from cnnlab.training.callbacks import ResumedEarlyStopping


@dataclass(frozen=True)
class Start:
    first_epoch: int  # 1-based: the second phase's first epoch
    weights: list  # model.get_weights() of the frozen model as the first phase left it


def start_path(run_dir):
    return Path(run_dir) / run_files.RESUME_DIR / run_files.FINE_TUNE_START


def saved_start(run_dir):
    """Where the run's second phase began, once it has begun; else None."""
    path = start_path(run_dir)
    if not path.is_file():
        return None
    with np.load(path) as saved:
        return Start(first_epoch=int(saved["first_epoch"]), weights=[saved[f"w{i}"] for i in range(len(saved.files) - 1)])


def save_start(run_dir, model, first_epoch):
    """Keeps the weights the second phase starts from, then lets the first phase's backup go (the second backs up its own)."""
    path = start_path(run_dir)
    path.parent.mkdir(exist_ok=True)
    weights = model.get_weights()
    with run_files.atomic_file(path, "wb") as f:
        np.savez(f, first_epoch=first_epoch, **{f"w{i}": w for i, w in enumerate(weights)})
    drop_first_phase_backup(run_dir)
    return Start(first_epoch=first_epoch, weights=weights)


def drop_first_phase_backup(run_dir):
    """The first phase's BackupAndRestore state, which must not be loaded into the second phase's model."""
    import shutil

    shutil.rmtree(Path(run_dir) / run_files.BACKUP_DIR, ignore_errors=True)


def first_phase_ended(model, callbacks):
    """Whether the first phase ended as planned (its epochs, or early stopping) rather than stopped by anything else,
    such as TerminateOnNaN or a sweep's pruner: only then does the second phase follow."""
    if not model.stop_training:
        return True
    return any(isinstance(cb, ResumedEarlyStopping) and keras_compat.early_stopping_stopped_epoch(cb) > 0 for cb in callbacks)


def unfreeze(model, config):
    """The second phase's model: the backbone's top layers trainable (not BatchNormalization), compiled with the lower rate."""
    import keras

    backbone = builder.find_backbone(model)
    backbone.trainable = True  # every layer of it; then all but the top ones frozen again
    for layer in backbone.layers[:-config.train.fine_tune.unfreeze]:
        layer.trainable = False
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    builder.compile_model(model, second_phase_config(config))
    return backbone


def second_phase_config(config):
    """The config with compile.optimizer.learning_rate replaced by train.fine_tune.learning_rate."""
    optimizer = config.compile.optimizer
    optimizer = replace(optimizer, kwargs={**optimizer.kwargs, "learning_rate": config.train.fine_tune.learning_rate})
    return replace(config, compile=replace(config.compile, optimizer=optimizer))


def trainable_count(model):
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def describe(model, backbone, config, first_epoch):
    """One line for people when the second phase begins."""
    ft = config.train.fine_tune
    return (f"Fine-tuning from epoch {first_epoch}: the top {ft.unfreeze} of the {len(backbone.layers)} layers of "
            f"{backbone.name} trainable (BatchNormalization layers stay frozen), {trainable_count(model):,} trainable "
            f"parameters, learning rate {ft.learning_rate:g}")
