"""Compile and fit a configured model into a run folder; knows nothing of the command line.

Everything that can be wrong with a config or its data is found before the run
folder is created, so a failed start leaves nothing behind that looks like a run.
Imports Keras at the top: the CLI imports this module only inside `cnnlab train`.
"""

import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from cnnlab import __version__, builder, data, plots, runs
from cnnlab.errors import ConfigError, RunError, TrainingInterrupted
from cnnlab.preprocess import check_input_shape, make_dataset, preprocessing_for, preprocessing_record


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    metrics: dict


def train(config, runs_dir, verbose=1, initial_weights=None):
    """Trains `config` into a new folder under `runs_dir` and returns it with its metrics.

    `initial_weights` (a `.weights.h5` file of the same model) replaces the seeded
    initialisation, so that runs compared against each other start from the same point.
    """
    keras.utils.set_random_seed(config.seed)
    splits = data.load_dataset(config.data, config.train.validation_split, config.seed)
    prep = preprocessing_for(config.data)
    check_input_shape(prep, splits.x_train.shape[1:], config.model.input_shape)
    model = builder.validate(config)
    check_output_units(model, len(splits.class_names), config)
    if initial_weights is not None:
        model.load_weights(initial_weights)

    run_dir = runs.create_run_dir(runs_dir, config.name)
    runs.set_status(run_dir, runs.RUNNING)
    write_run_description(run_dir, config, model, splits, prep)
    train_ds = make_dataset(splits.x_train, splits.y_train, prep, config.train.batch_size,
                            shuffle=config.train.shuffle, seed=config.seed)
    val_ds = make_dataset(splits.x_val, splits.y_val, prep, config.train.batch_size)
    if verbose:
        print(f"Run folder: {run_dir}\nData: {splits.description}: {len(splits.x_train)} train, "
              f"{len(splits.x_val)} validation, {0 if splits.x_test is None else len(splits.x_test)} test images", flush=True)

    started = time.perf_counter()
    try:
        history = model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs,
                            callbacks=make_callbacks(config, run_dir), verbose=verbose,
                            shuffle=False)  # tf.data already reshuffles every epoch, seeded
    except KeyboardInterrupt:
        runs.set_status(run_dir, runs.INTERRUPTED, "stopped by the user (Ctrl-C)")
        raise TrainingInterrupted(f"training interrupted; the run folder {run_dir} is marked interrupted") from None
    except Exception as exc:  # a Keras failure mid-fit: record it, then report it as one line
        reason = builder.keras_message(exc)
        runs.set_status(run_dir, runs.FAILED, reason)
        raise RunError(f"training failed in {run_dir}: {reason}") from None
    wall_time = time.perf_counter() - started

    metrics = finish_run(run_dir, config, history.history, splits, prep, wall_time)
    return TrainResult(run_dir=run_dir, metrics=metrics)


def check_output_units(model, num_classes, config):
    units = model.output_shape[-1]
    if config.compile.loss == "sparse_categorical_crossentropy" and units != num_classes:
        last = config.model.layers[-1].path
        raise ConfigError(last, f"the model outputs {units} values but the data has {num_classes} classes; set the last layer's units to {num_classes}")


def write_run_description(run_dir, config, model, splits, prep):
    """What the run is, written before training so an interrupted run still explains itself."""
    runs.write_text(run_dir / runs.CONFIG, config.to_yaml())
    runs.write_json(run_dir / runs.PREPROCESSING, preprocessing_record(prep, splits.x_train.shape[1:], config.model.input_shape))
    runs.write_json(run_dir / runs.CLASS_NAMES, list(splits.class_names))
    runs.write_json(run_dir / runs.ENV, environment(config))
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    runs.write_text(run_dir / runs.SUMMARY, "\n".join(lines) + "\n")


def make_callbacks(config, run_dir):
    """Keras' own callbacks, configured from the config, writing into the run folder."""
    cbs = config.train.callbacks
    callbacks = [keras.callbacks.ModelCheckpoint(str(run_dir / runs.MODEL), **cbs["checkpoint"]),
                 EpochLog(run_dir / runs.HISTORY),
                 keras.callbacks.TerminateOnNaN()]
    if cbs["early_stopping"] is not None:
        callbacks.append(keras.callbacks.EarlyStopping(**cbs["early_stopping"]))
    if cbs["reduce_lr"] is not None:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(**cbs["reduce_lr"]))
    if cbs["tensorboard"] is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.TENSORBOARD), **cbs["tensorboard"]))
    return callbacks


class EpochLog(keras.callbacks.Callback):
    """Rewrites history.csv atomically after every epoch, so an interruption leaves whole rows only."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}})
        runs.write_history(self.path, self.rows)


def finish_run(run_dir, config, history, splits, prep, wall_time):
    """Scores the best model, writes metrics and plots, and marks the run completed (or failed on NaN)."""
    epochs_run = len(history.get("loss", []))
    monitor = config.train.callbacks["checkpoint"].get("monitor", "val_loss")
    best_epoch = best_epoch_of(history, monitor, config.train.callbacks["checkpoint"].get("mode", "auto"))
    metrics = {
        "epochs_run": epochs_run,
        "epochs_planned": config.train.epochs,
        "monitor": monitor,
        "best_epoch": best_epoch,
        "best": {key: history[key][best_epoch - 1] for key in history if key.startswith("val_")} if best_epoch else {},
        "final": {key: values[-1] for key, values in history.items() if values},
        "test": None,
        "wall_time_s": round(wall_time, 3),
        "images_per_s": round(len(splits.x_train) * epochs_run / wall_time, 1) if wall_time > 0 else None,
        "num_train": len(splits.x_train),
        "num_val": len(splits.x_val),
        "num_test": 0 if splits.x_test is None else len(splits.x_test),
    }
    model_path = run_dir / runs.MODEL
    if splits.x_test is not None and model_path.exists():
        best_model = keras.models.load_model(model_path)
        test_ds = make_dataset(splits.x_test, splits.y_test, prep, config.train.batch_size)
        metrics["test"] = {key: float(value) for key, value in best_model.evaluate(test_ds, verbose=0, return_dict=True).items()}
    runs.write_json(run_dir / runs.METRICS, metrics)
    write_plots(run_dir, history, best_epoch, config.name)

    nan_epoch = first_nan_epoch(history)
    if nan_epoch is not None:
        runs.set_status(run_dir, runs.FAILED, f"loss became NaN at epoch {nan_epoch}; try a smaller learning rate")
        raise RunError(f"training failed in {run_dir}: loss became NaN at epoch {nan_epoch}; try a smaller compile.optimizer.learning_rate")
    if not model_path.exists():
        runs.set_status(run_dir, runs.FAILED, f"no best model was saved: the checkpoint monitor {monitor!r} was never logged")
        raise RunError(f"training failed in {run_dir}: train.callbacks.checkpoint.monitor {monitor!r} is not a logged metric; logged: {', '.join(history)}")
    runs.set_status(run_dir, runs.COMPLETED)
    return metrics


def best_epoch_of(history, monitor, mode="auto"):
    """1-based epoch with the best `monitor` value, as Keras' 'auto' mode judges it; None if never logged."""
    values = history.get(monitor)
    if not values:
        return None
    maximize = mode == "max" or (mode == "auto" and ("acc" in monitor or "auc" in monitor or monitor.startswith("fmeasure")))
    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    best = max(finite) if maximize else min(finite, key=lambda pair: (pair[0], pair[1]))
    if maximize:  # first epoch reaching the maximum, as Keras keeps the first best
        best = min((pair for pair in finite if pair[0] == best[0]), key=lambda pair: pair[1])
    return best[1] + 1


def first_nan_epoch(history):
    for i, value in enumerate(history.get("loss", [])):
        if value is None or not math.isfinite(value):
            return i + 1
    return None


def write_plots(run_dir, history, best_epoch, name):
    accuracy_key = next((key for key in ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy") if key in history), None)
    for metric, filename in (("loss", runs.LOSS_PLOT), (accuracy_key, runs.ACCURACY_PLOT)):
        if metric in history:
            fig = plots.plot_history(history, metric, best_epoch, title=f"{name}: {metric}")
            runs.save_figure(fig, run_dir / filename)
            plots.close(fig)


def environment(config):
    """Versions and devices, so a result can be traced to the software that produced it."""
    import numpy
    import tensorflow as tf

    return {
        "cnnlab": __version__,
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "devices": [device.name for device in tf.config.list_physical_devices()],
        "seed": config.seed,
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "cpu_count": os.cpu_count(),
    }


def git_commit():
    """The commit of the working directory's repository, when there is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
