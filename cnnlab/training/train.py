"""Compile and fit a configured model into a run folder; knows nothing of the command line.

Everything that can be wrong with a config or its data is found before the run
folder is created, so a failed start leaves nothing behind that looks like a run.
Imports Keras at the top: the CLI imports this module only inside `cnnlab train`.
"""

import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from contextlib import contextmanager

import keras

from cnnlab.version import __version__
from cnnlab.runtime import backend
from cnnlab.model import builder
from cnnlab.training import callbacks, distribute, fine_tune, keras_fit
from cnnlab.data import sources as data
from cnnlab.tracking import plots, tensorboard as tensorboard_logs, mlflow as tracking
from cnnlab.rundir import files as run_files, lock as run_lock, resume_state
from cnnlab.training.callbacks import best_epoch_of, history_of, monitor_of
from cnnlab.config.experiment import load_config, with_train_values
from cnnlab.runtime.cores import usable_cores
from cnnlab.runtime.credentials import redact_command
from cnnlab.errors import CnnlabError, ConfigError, RunError, TrainingInterrupted, short_repr
from cnnlab.config.metric_names import accuracy_key
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import check_input_shape, preprocessing_for, preprocessing_record


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path  # on a multi-worker worker other than the chief: its temporary folder, already removed
    metrics: dict
    chief: bool = True  # False on the workers that do not write the run folder
    tracking_error: str | None = None  # the run is complete, but MLflow could not be reached or written (cnnlab/tracking/mlflow.py)


def train(config, runs_dir, verbose=1, initial_weights=None, extra_callbacks=()):
    """Trains `config` into a new folder under `runs_dir` and returns it with its metrics.

    `initial_weights` (a `.weights.h5` file of the same model) replaces the seeded
    initialisation, so that runs compared against each other start from the same point.
    `extra_callbacks` run after the run's own (a sweep reports each epoch to its study there).
    """
    config, strategy, model, splits, prep = set_up(config)
    if initial_weights is not None:
        model.load_weights(initial_weights)
    if not distribute.is_chief(strategy):
        return fit_as_worker(config, model, splits, prep, strategy, past_rows=[], verbose=verbose)
    run_dir = run_files.create_run_dir(runs_dir, config.name)
    with run_lock.training_lock(run_dir):
        run_files.set_status(run_dir, run_files.RUNNING)
        write_run_description(run_dir, config, model, splits, prep, strategy)
        with tracking.tracked(run_dir, config) as tracker:
            result = fit_into(run_dir, config, model, splits, prep, past_rows=[], verbose=verbose, strategy=strategy,
                              extra_callbacks=[*extra_callbacks, *tracker.callbacks])
        return replace(result, tracking_error=tracker.error)


def set_up(config):
    """Everything before a run folder is written: threads, strategy, data and model, and the numbers `auto` became.

    The threads come first: TensorFlow fixes them at its first operation. The returned
    config holds `train.batch_parts` and `train.steps_per_execution` as numbers, which the
    run writes into its config.yaml, so that file (and a resume) trains the same way.
    On JAX and PyTorch (Keras' `fit`, cnnlab/training/keras_fit.py) both are 1 unless configured.
    """
    keras_fit.check_supported(config, backend.name())
    if backend.is_tensorflow():
        from cnnlab.training import tf_loop as loop  # TensorFlow's own loop: imported only where TensorFlow is the backend

        parts = loop.resolve_batch_parts(config)
    else:
        parts = 1
    backend.share_cores(usable_cores(), parts)
    strategy = distribute.make_strategy(config.distribution) if backend.is_tensorflow() else None
    if config.distribution.strategy == "data_parallel":
        keras_fit.data_parallel()
    model, splits, prep = prepare(config, strategy)
    steps = resolve_steps(config, model, len(splits.x_train))
    return with_train_values(config, batch_parts=parts, steps_per_execution=steps), strategy, model, splits, prep


def resolve_steps(config, model, num_train):
    """train.steps_per_execution as a number (`auto`: from the model's size, see loop.steps_per_execution;
    one batch a call under a tf.distribute strategy, Keras' default for `fit`, and where TensorBoard logs
    batch-level steps: Keras' `update_freq` counts calls, which are then batches, as its documentation says)."""
    if config.train.steps_per_execution != "auto":
        return config.train.steps_per_execution
    if (config.distribution.strategy != "default" or not backend.is_tensorflow()
            or tensorboard_logs.batch_level(config.train.callbacks["tensorboard"])):
        return 1
    from cnnlab.training import tf_loop as loop

    return loop.steps_per_execution(model, config.train.batch_size, math.ceil(num_train / config.train.batch_size))


def resume(run_dir, verbose=1):
    """Continues an interrupted or killed run in its own folder, from its last completed epoch.

    Model and optimizer state come from Keras' BackupAndRestore files in the run
    folder; history.csv is cut back to the epoch they hold, so every epoch appears
    exactly once; early stopping and the best checkpoint carry on from that history.
    """
    run_dir = Path(run_dir)
    if not (run_dir / run_files.CONFIG).is_file():
        raise RunError(f"{run_dir} is not a run folder: {run_files.CONFIG} is missing")
    check_resumable(run_dir)
    config, strategy, model, splits, prep = set_up(load_config(run_dir / run_files.CONFIG))  # with the numbers the run recorded
    if not distribute.is_chief(strategy):  # reads the chief's folder (shared storage), never writes it
        return fit_as_worker(config, model, splits, prep, strategy, resumed_rows(run_dir), verbose,
                             backup_from=run_dir / run_files.BACKUP_DIR)
    with run_lock.training_lock(run_dir):
        check_resumable(run_dir)  # again: another process may have finished the run meanwhile
        past_rows = resumed_rows(run_dir)
        run_files.write_history(run_dir / run_files.HISTORY, past_rows)
        run_files.set_status(run_dir, run_files.RUNNING)
        if verbose:
            print(f"Resuming {run_dir} after epoch {len(past_rows)} of {planned_epochs(config)}", flush=True)
        with tracking.tracked(run_dir, config) as tracker:  # the MLflow run the run began, where it has one
            result = fit_into(run_dir, config, model, splits, prep, past_rows=past_rows, verbose=verbose, strategy=strategy,
                              extra_callbacks=tracker.callbacks)
        return replace(result, tracking_error=tracker.error)


def check_resumable(run_dir):
    if run_files.read_status(run_dir).state == run_files.COMPLETED:
        raise RunError(f"{run_dir} has already completed; nothing to resume")
    recorded = run_files.read_backend(run_dir)
    if recorded != backend.name():  # each backend orders the epochs its own way (tf.data's shuffle, NumPy's permutation)
        raise RunError(f"{run_dir} trained on {recorded}, not {backend.name()}; resume it on the same backend: "
                       f"cnnlab train --resume {run_dir} --backend {recorded}")


def resumed_rows(run_dir):
    """history.csv cut back to the epochs Keras' BackupAndRestore holds, so every epoch appears once.

    Once fine-tuning has begun, a backup of no epoch of it is the first phase's, and the
    second phase starts again from the weights it saved (cnnlab/training/fine_tune.py).
    """
    done = resume_state.backup_epoch(run_dir)
    start = fine_tune.saved_start(run_dir)
    if start is not None and done < start.first_epoch:
        fine_tune.drop_first_phase_backup(run_dir)
        done = start.first_epoch - 1
    history_path = run_dir / run_files.HISTORY
    return run_files.read_history_rows(history_path)[:done] if history_path.exists() else []


def prepare(config, strategy=None):
    """Seeds, loads the data and builds the compiled model, checking that they fit together.

    With a tf.distribute `strategy` the model is built and compiled in its scope,
    so its variables are mirrored on every replica.
    """
    tracking.check_installed(config)
    keras.utils.set_random_seed(config.seed)
    splits = data.load_dataset(config.data, config.train.validation_split, config.seed)
    prep = preprocessing_for(config.data)
    check_input_shape(prep, splits.x_train.shape[1:], config.model.input_shape)
    check_global_batch(config, distribute.num_replicas(strategy) * keras_fit.replicas(config))
    as_written = "true" if config.raw.get("mixed_precision") is True else None
    with distribute.precision_policy(config.mixed_precision, as_written), distribute.scope(strategy):
        model = builder.validate(output_in_float32(config) if config.mixed_precision else config)
        distribute.scale_learning_rate(model, config.distribution, strategy)
    check_output_units(model, len(splits.class_names), config)
    return model, splits, prep


def output_in_float32(config):
    """Mixed precision keeps the last layer in float32, so softmax and loss do not lose precision or overflow."""
    last = config.model.layers[-1]
    kwargs = {"dtype": "float32", **last.kwargs}
    layers = config.model.layers[:-1] + (replace(last, kwargs=kwargs),)
    return replace(config, model=replace(config.model, layers=layers))


def check_global_batch(config, replicas):
    if config.train.batch_size < replicas:
        raise ConfigError("train.batch_size", f"is the global batch, split across {replicas} replicas; "
                          f"it must be at least {replicas}, received {config.train.batch_size}")


def fit_as_worker(config, model, splits, prep, strategy, past_rows, verbose, backup_from=None):
    """A multi-worker worker other than the chief trains into a temporary folder and removes it.

    This is Keras' multi-worker convention: every worker runs the same callbacks
    (they take part in the same collective steps), but only the chief's files
    are kept, so the run folder looks exactly as after single-device training.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="cnnlab-worker-"))
    try:
        if backup_from is not None and backup_from.is_dir():
            shutil.copytree(backup_from, run_dir / run_files.BACKUP_DIR)
        result = fit_into(run_dir, config, model, splits, prep, past_rows, verbose, strategy=strategy, chief=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def fit_into(run_dir, config, model, splits, prep, past_rows, verbose, strategy=None, chief=True, extra_callbacks=()):
    """Trains with the run's callbacks (on TensorFlow cnnlab's loop on one device, `fit` under a strategy;
    Keras' `fit` on JAX and PyTorch); Ctrl-C or SIGTERM leave a consistent, resumable folder."""
    if strategy is not None:  # train.batch_size is the global batch: the strategy splits each one across replicas
        train_ds = distribute.shard_by_data(make_dataset(splits.x_train, splits.y_train, prep, config.train.batch_size,
                                                         shuffle=config.train.shuffle, seed=config.seed))
        val_ds = distribute.shard_by_data(make_dataset(splits.x_val, splits.y_val, prep, config.train.batch_size))
        distribute.build_without_peeking(model, train_ds, strategy)
    replicas = distribute.num_replicas(strategy) * keras_fit.replicas(config)
    if verbose and (strategy is not None or replicas > 1):
        print(f"Strategy: {config.distribution.strategy}, {replicas} replicas, "
              f"global batch {config.train.batch_size}" + ("" if chief else "; this worker's files are temporary"), flush=True)
    if verbose:
        print(f"Run folder: {run_dir}\nData: {splits.description}: {len(splits.x_train)} train, "
              f"{len(splits.x_val)} validation, {0 if splits.x_test is None else len(splits.x_test)} test images", flush=True)
    logs = []  # the EpochLog of each phase trained here: the last one holds every epoch's row
    boards = []  # TensorBoard callbacks, whose event files an interruption leaves open

    def callbacks_for(rows, phase=None, first_epoch=1):
        made = callbacks.make_callbacks(config, run_dir, rows, phase, first_epoch) + list(extra_callbacks)
        logs.append(made[0])
        boards.extend(callback for callback in made if isinstance(callback, tensorboard_logs.RunTensorBoard))
        return made

    started = time.perf_counter()  # the fit's own time: every phase, with every callback's work (checkpoints, backups, logging)
    with sigterm_as_interrupt():
        try:
            if strategy is None:
                fit_on_device(model, config, splits, prep, run_dir, past_rows, verbose, callbacks_for)
            else:
                run_callbacks = callbacks_for(past_rows)
                with distribute.watch_steps(strategy, run_dir, lambda reason: give_up_run(run_dir, chief, reason)) as watchdog:
                    model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs, callbacks=run_callbacks + watchdog,
                              verbose=verbose, shuffle=False)  # tf.data already reshuffles every epoch, seeded
        except KeyboardInterrupt:
            interrupted(run_dir, config, logs[-1].rows if logs else past_rows)
        except CnnlabError as exc:  # e.g. a write into the run folder failed (disk full)
            run_files.set_status(run_dir, run_files.FAILED, str(exc))
            raise
        except Exception as exc:  # a Keras failure mid-fit: record it, then report it as one line
            reason = failure_reason(exc)
            run_files.set_status(run_dir, run_files.FAILED, reason)
            raise RunError(f"training failed in {run_dir}: {reason}") from exc
        finally:
            for board in boards:
                board.close()
    fit_time = FitTime(seconds=time.perf_counter() - started, epochs=len(logs[-1].rows) - len(past_rows))
    metrics = finish_run(run_dir, config, logs[-1].rows, splits, prep, fit_time)
    return TrainResult(run_dir=run_dir, metrics=metrics, chief=chief)


def fit_on_device(model, config, splits, prep, run_dir, past_rows, verbose, callbacks_for):
    """cnnlab's loop on TensorFlow, Keras' `fit` on JAX and PyTorch (keras_fit.py); with train.fine_tune, the first
    phase and then the second (cnnlab/training/fine_tune.py).

    `callbacks_for(rows, phase, first_epoch)` makes each phase's callbacks, the epochs in `rows` already done.
    """
    def fit(rows, epochs, phase=None, first_epoch=1):
        run_callbacks = callbacks_for(rows, phase, first_epoch)
        shared = dict(batch_size=config.train.batch_size, epochs=epochs, callbacks=run_callbacks, verbose=verbose,
                      shuffle=config.train.shuffle, seed=config.seed, initial_epoch=len(rows))
        train, val = (splits.x_train, splits.y_train), (splits.x_val, splits.y_val)
        if backend.is_tensorflow():
            from cnnlab.training import tf_loop as loop  # TensorFlow's own: imported only where TensorFlow is the backend

            loop.fit(model, train, val, prep, parts=config.train.batch_parts,
                     steps_per_execution=config.train.steps_per_execution, **shared)
        else:
            keras_fit.fit(model, train, val, prep, replicas=keras_fit.replicas(config), **shared)
        return run_callbacks

    if config.train.fine_tune is None:
        fit(past_rows, config.train.epochs)
        return
    start = fine_tune.saved_start(run_dir)
    rows = past_rows
    if start is None:  # the first phase has yet to end (a resumed one may have no epoch left, only its ending)
        first_phase = fit(past_rows, config.train.epochs, phase=1)
        rows = first_phase[0].rows
        if not fine_tune.first_phase_ended(model, first_phase) or first_nan_epoch(history_of(rows)) is not None:
            return
        start = fine_tune.save_start(run_dir, model, first_epoch=len(rows) + 1)
    else:  # resumed after the second phase had begun: from the weights it began with (its backup, if any, comes on top)
        model.set_weights(start.weights)
    backbone = fine_tune.unfreeze(model, config)
    if verbose:
        print(fine_tune.describe(model, backbone, config, start.first_epoch), flush=True)
    fit(rows, start.first_epoch - 1 + config.train.fine_tune.epochs, phase=2, first_epoch=start.first_epoch)


def planned_epochs(config):
    """The most epochs the run can have: the first phase's, and fine-tuning's after them."""
    return config.train.epochs + (config.train.fine_tune.epochs if config.train.fine_tune else 0)


def give_up_run(run_dir, chief, reason):
    """A multi-worker process about to end inside a stalled step: the chief's status says why, a worker's temporary folder goes."""
    if chief:
        run_files.set_status(run_dir, run_files.FAILED, reason)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)


def interrupted(run_dir, config, rows):
    """Leaves an interrupted run consistent (plots of the epochs done, status) and says how to resume."""
    done = len(rows)
    history = history_of(rows)
    write_plots(run_dir, history, best_epoch_of(history, *monitor_of(config)), config.name)
    run_files.set_status(run_dir, run_files.INTERRUPTED, f"after epoch {done} of {planned_epochs(config)}")
    raise TrainingInterrupted(f"training interrupted after epoch {done} of {planned_epochs(config)}; "
                              f"resume with: cnnlab train --resume {run_dir}") from None


def failure_reason(exc):
    """One line for the status file and the terminal; a failed write names its file (disk full, quota)."""
    if isinstance(exc, OSError) and exc.strerror:
        target = f" {exc.filename}" if exc.filename else " a file in the run folder"
        return f"cannot write{target}: {exc.strerror}"
    return builder.keras_message(exc)


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a closed session, `kill`, a scheduler) stops training like Ctrl-C does."""
    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_output_units(model, num_classes, config):
    if len(model.output_shape) != 2:  # a Dense on feature maps keeps their height and width: the loss fails mid-training
        hint = "model.backbone.pooling: avg, or " if config.model.backbone is not None else ""
        raise ConfigError(config.model.layers[-1].path, f"the model outputs shape {tuple(model.output_shape)}, not one vector per image; "
                          f"add {hint}Flatten or GlobalAveragePooling2D before the last layer")
    units = model.output_shape[-1]
    if config.compile.loss == "sparse_categorical_crossentropy" and units != num_classes:
        last = config.model.layers[-1].path
        raise ConfigError(last, f"the model outputs {units} values but the data has {num_classes} classes; set the last layer's units to {num_classes}")


def write_run_description(run_dir, config, model, splits, prep, strategy=None):
    """What the run is, written before training so an interrupted run still explains itself."""
    run_files.write_text(run_dir / run_files.CONFIG, config.to_yaml())
    run_files.write_json(run_dir / run_files.PREPROCESSING, preprocessing_record(prep, splits.x_train.shape[1:], config.model.input_shape))
    run_files.write_json(run_dir / run_files.CLASS_NAMES, list(splits.class_names))
    run_files.write_json(run_dir / run_files.ENV, environment(config, strategy))
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


def finish_run(run_dir, config, rows, splits, prep, fit_time):
    """Scores the best model, writes metrics and plots, and marks the run completed (or failed on NaN)."""
    history = history_of(rows)
    epochs_run = len(history.get("loss", []))
    monitor, mode = monitor_of(config)
    best_epoch = best_epoch_of(history, monitor, mode)
    metrics = {
        "epochs_run": epochs_run,
        "epochs_planned": planned_epochs(config),
        "monitor": monitor,
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
    if splits.x_test is not None and model_path.exists():
        best_model = keras.models.load_model(model_path)
        test_ds = make_dataset(splits.x_test, splits.y_test, prep, config.train.batch_size)
        metrics["test"] = {key: float(value) for key, value in best_model.evaluate(test_ds, verbose=0, return_dict=True).items()}
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
