"""What a run folder records about itself: its description before training, its metrics and plots after.

config.yaml, preprocessing.json, class_names.json, env.json and model_summary.txt are
written before the first epoch, so an interrupted run still explains itself; metrics.json,
the plots and the status after the last, once the best model has been scored on the test split.
"""

import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from cnnlab.config.best_epoch import history_of, kept_epoch, monitor_of, saves_every_epoch
from cnnlab.config.intervals import intervals_of
from cnnlab.config.metric_names import accuracy_key
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import preprocessing_record
from cnnlab.errors import RunError, short_repr
from cnnlab.rundir import files as run_files
from cnnlab.runtime import backend
from cnnlab.runtime.cores import usable_cores
from cnnlab.runtime.credentials import redact_command
from cnnlab.tracking import plots, tensorboard as tensorboard_logs
from cnnlab.training import distribute, keras_fit
from cnnlab.version import __version__


def planned_epochs(config):
    """The most epochs the run can have: the first phase's, and fine-tuning's after them."""
    return config.train.epochs + (config.train.fine_tune.epochs if config.train.fine_tune else 0)


def write_run_description(run_dir, job):
    """What the run is, written before training so an interrupted run still explains itself."""
    config, model, splits, prep = job.config, job.model, job.splits, job.prep
    run_files.write_text(run_dir / run_files.CONFIG, config.to_yaml())
    run_files.write_json(run_dir / run_files.PREPROCESSING, preprocessing_record(prep, splits.x_train.shape[1:], config.model.input_shape))
    run_files.write_json(run_dir / run_files.CLASS_NAMES, list(splits.class_names))
    run_files.write_json(run_dir / run_files.ENV, environment(config, job.strategy))
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    run_files.write_text(run_dir / run_files.SUMMARY, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class FitTime:
    """The time this process spent in `fit` (every phase, all callbacks included) and the epochs it trained in it.

    A resumed run's earlier sessions are not in it: they may have been killed before they
    could say how long they ran. history.csv's `time_s` covers every session's epochs.
    """

    seconds: float
    epochs: int


def finish_run(run_dir, job, rows, fit_time, final=None):
    """Scores the best model (and the final one of train.final_fit, whose `final` record metrics.json keeps),
    writes metrics and plots, and marks the run completed (or failed on NaN)."""
    config, splits = job.config, job.splits
    history = history_of(rows)
    epochs_run = len(history.get("loss", []))
    monitor, _ = monitor_of(config)
    best_epoch = kept_epoch(history, config)
    metrics = {
        "epochs_run": epochs_run,
        "epochs_planned": planned_epochs(config),
        "monitor": monitor,
        # which epoch best.keras holds: "best" by the monitor, or "last" where the checkpoint saves every epoch
        "kept": "last" if saves_every_epoch(config) else "best",
        "best_epoch": best_epoch,
        "best": {key: history[key][best_epoch - 1] for key in history if key.startswith("val_")} if best_epoch else {},
        "final": {key: values[-1] for key, values in history.items() if values},
        "test": None,
        # fit_time_s is what a person waits for (what `cnnlab train` prints, what the bench compares with plain `fit`);
        # epoch_time_s, the sum of history.csv's time_s, leaves out what the callbacks do after each epoch
        "fit_time_s": round(fit_time.seconds, 3),
        "fit_epochs": fit_time.epochs,
        "epoch_time_s": round(sum(row["time_s"] for row in rows), 3),
        "images_per_s": round(len(splits.x_train) * fit_time.epochs / fit_time.seconds, 1) if fit_time.seconds > 0 else None,
        "num_train": len(splits.x_train),
        "num_val": len(splits.x_val),
        "num_test": 0 if splits.x_test is None else len(splits.x_test),
    }
    if config.train.fine_tune is not None:  # where the second phase began (None where it never did)
        metrics["fine_tune_first_epoch"] = next((row["epoch"] for row in rows if row.get("phase") == 2), None)
    model_path = run_dir / run_files.MODEL
    if model_path.exists():
        metrics["test"] = test_score(model_path, job)
    metrics["intervals"] = held_out_intervals(metrics)
    if final is not None:  # train.final_fit: final.keras, scored on the same test split, which neither model saw
        test = test_score(run_dir / run_files.FINAL_MODEL, job)
        metrics["final_fit"] = {**final, "test": test, "intervals": {"test": intervals_of(test, metrics["num_test"])}}
    run_files.write_json(run_dir / run_files.METRICS, metrics)
    write_plots(run_dir, history, best_epoch, config.name)
    if tensorboard_logs.has_logs(config):
        tensorboard_logs.write_results(tensorboard_logs.log_dir_of(run_dir), metrics)
    # best.keras is published; these were only for resuming (the backup of a first phase not followed by a second too)
    for leftover in (run_files.CHECKPOINT_DIR, run_files.RESUME_DIR, run_files.BACKUP_DIR):
        shutil.rmtree(run_dir / leftover, ignore_errors=True)

    nan_epoch = first_nan_epoch(history)
    if nan_epoch is not None:
        run_files.set_status(run_dir, run_files.FAILED, f"loss became NaN at epoch {nan_epoch}; try a smaller learning rate")
        raise RunError(f"training failed in {run_dir}: loss became NaN at epoch {nan_epoch}; try a smaller compile.optimizer.learning_rate")
    if not model_path.exists():
        run_files.set_status(run_dir, run_files.FAILED, f"no best model was saved: the checkpoint monitor {short_repr(monitor)} was never logged")
        raise RunError(f"training failed in {run_dir}: train.callbacks.checkpoint.monitor {short_repr(monitor)} is not a logged metric; logged: {', '.join(history)}")
    run_files.set_status(run_dir, run_files.COMPLETED)
    return metrics


def test_score(model_path, job):
    """The saved model's Keras metrics on the test split; None where the data has none."""
    splits = job.splits
    if splits.x_test is None:
        return None
    model = keras.models.load_model(model_path)
    test_ds = make_dataset(splits.x_test, splits.y_test, job.prep, job.config.train.batch_size)
    return {key: float(value) for key, value in model.evaluate(test_ds, verbose=0, return_dict=True).items()}


def held_out_intervals(metrics):
    """Wilson's 95% interval of each accuracy measured on the whole validation or test split, with its n and count.

    Keyed as `best` and `test` are; an accuracy that is no count of the split's images (a
    weighted one, or one over images a multi-device run left out) gets none.
    """
    return {"best": intervals_of(metrics["best"], metrics["num_val"], prefix="val_"),
            "test": intervals_of(metrics["test"], metrics["num_test"])}


def first_nan_epoch(history):
    for i, value in enumerate(history.get("loss", [])):
        if value is None or not math.isfinite(value):
            return i + 1
    return None


def write_plots(run_dir, history, best_epoch, name):
    for metric, filename in (("loss", run_files.LOSS_PLOT), (accuracy_key(history), run_files.ACCURACY_PLOT)):
        if metric in history:
            fig = plots.plot_history(history, metric, best_epoch, title=f"{name}: {metric}")
            run_files.save_figure(fig, run_dir / filename)


def environment(config, strategy=None):
    """Versions and devices, so a result can be traced to the software that produced it."""
    import numpy

    name = backend.name()
    return {
        "cnnlab": __version__,
        "python": sys.version.split()[0],
        "backend": name,  # Keras' backend; the next key is its version
        name: backend.version(name),
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "devices": backend.devices(),
        "seed": config.seed,
        "git_commit": git_commit(),
        "command": redact_command([Path(sys.argv[0]).name] + sys.argv[1:]),  # a --storage URL's password is not kept
        "cpu_count": os.cpu_count(),
        "cores": usable_cores(),  # the process's budget (affinity, CNNLAB_CORES), from which batch_parts: auto was chosen
        "distribution": {"strategy": config.distribution.strategy,
                         "replicas": distribute.num_replicas(strategy) * keras_fit.replicas(config),
                         "mixed_precision": config.mixed_precision},
        "batch_parts": config.train.batch_parts,  # see cnnlab/training/tf_loop.py; config.yaml records them too
        "steps_per_execution": config.train.steps_per_execution,
        "threads_per_op": backend.threads_per_op(),
    }


def git_commit():
    """The commit of the working directory's repository, when there is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
