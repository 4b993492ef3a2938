"""Compile and fit a configured model into a run folder; knows nothing of the command line.

Everything that can be wrong with a config or its data is found before the run
folder is created, so a failed start leaves nothing behind that looks like a run.
Imports Keras (through job.py): the CLI imports this module only inside the commands that train.
"""

import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from contextlib import contextmanager

from cnnlab.runtime import backend
from cnnlab.model import builder
from cnnlab.training import callbacks, distribute, final_fit, fine_tune, keras_fit
from cnnlab.tracking import tensorboard as tensorboard_logs, mlflow as tracking
from cnnlab.rundir import files as run_files, lock as run_lock, resume_state
from cnnlab.training.callbacks import history_of
from cnnlab.config.best_epoch import kept_epoch
from cnnlab.training.job import set_up
from cnnlab.training.records import FitTime, finish_run, first_nan_epoch, planned_epochs, write_plots, write_run_description
from cnnlab.config.experiment import load_config
from cnnlab.errors import CnnlabError, RunError, TrainingInterrupted
from cnnlab.data.array_batches import make_dataset


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
    job = set_up(config)
    if initial_weights is not None:
        job.model.load_weights(initial_weights)
    if not distribute.is_chief(job.strategy):
        return fit_as_worker(job, past_rows=[], verbose=verbose)
    run_dir = run_files.create_run_dir(runs_dir, job.config.name)
    with run_lock.training_lock(run_dir):
        run_files.set_status(run_dir, run_files.RUNNING)
        write_run_description(run_dir, job)
        with tracking.tracked(run_dir, job.config) as tracker:
            result = fit_into(run_dir, job, past_rows=[], verbose=verbose, extra_callbacks=[*extra_callbacks, *tracker.callbacks])
        return replace(result, tracking_error=tracker.error)


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
    job = set_up(load_config(run_dir / run_files.CONFIG))  # with the numbers the run recorded
    config = job.config
    if not distribute.is_chief(job.strategy):  # reads the chief's folder (shared storage), never writes it
        return fit_as_worker(job, resumed_rows(run_dir), verbose, backup_from=run_dir / run_files.BACKUP_DIR)
    with run_lock.training_lock(run_dir):
        check_resumable(run_dir)  # again: another process may have finished the run meanwhile
        past_rows = resumed_rows(run_dir)
        run_files.write_history(run_dir / run_files.HISTORY, past_rows)
        run_files.set_status(run_dir, run_files.RUNNING)
        if verbose:
            print(f"Resuming {run_dir} after epoch {len(past_rows)} of {planned_epochs(config)}", flush=True)
        with tracking.tracked(run_dir, config) as tracker:  # the MLflow run the run began, where it has one
            result = fit_into(run_dir, job, past_rows=past_rows, verbose=verbose, extra_callbacks=tracker.callbacks)
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


def fit_as_worker(job, past_rows, verbose, backup_from=None):
    """A multi-worker worker other than the chief trains into a temporary folder and removes it.

    This is Keras' multi-worker convention: every worker runs the same callbacks
    (they take part in the same collective steps), but only the chief's files
    are kept, so the run folder looks exactly as after single-device training.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="cnnlab-worker-"))
    try:
        if backup_from is not None and backup_from.is_dir():
            shutil.copytree(backup_from, run_dir / run_files.BACKUP_DIR)
        result = fit_into(run_dir, job, past_rows, verbose, chief=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def fit_into(run_dir, job, past_rows, verbose, chief=True, extra_callbacks=()):
    """Trains with the run's callbacks (on TensorFlow cnnlab's loop on one device, `fit` under a strategy;
    Keras' `fit` on JAX and PyTorch); Ctrl-C or SIGTERM leave a consistent, resumable folder."""
    config, model, splits, prep, strategy = job.config, job.model, job.splits, job.prep, job.strategy
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

    initial_weights = model.get_weights() if config.train.final_fit else None  # where the final fit starts again
    final = None
    started = time.perf_counter()  # the fit's own time: every phase, with every callback's work (checkpoints, backups, logging)
    with sigterm_as_interrupt():
        try:
            if strategy is None:
                fit_on_device(job, run_dir, past_rows, verbose, callbacks_for)
                fit_seconds = time.perf_counter() - started
                final_epochs = final_fit.wanted(config, logs[-1].rows if logs else past_rows)
                if final_epochs is not None:
                    final = final_fit.fit_final(job, run_dir, initial_weights, final_epochs, verbose)
            else:
                run_callbacks = callbacks_for(past_rows)
                with distribute.watch_steps(strategy, run_dir, lambda reason: give_up_run(run_dir, chief, reason)) as watchdog:
                    model.fit(train_ds, validation_data=val_ds, epochs=config.train.epochs, callbacks=run_callbacks + watchdog,
                              verbose=verbose, shuffle=False, class_weight=job.class_weight)  # tf.data already reshuffles every epoch, seeded
                fit_seconds = time.perf_counter() - started
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
    fit_time = FitTime(seconds=fit_seconds, epochs=len(logs[-1].rows) - len(past_rows))
    metrics = finish_run(run_dir, job, logs[-1].rows, fit_time, final=final)
    return TrainResult(run_dir=run_dir, metrics=metrics, chief=chief)


def fit_on_device(job, run_dir, past_rows, verbose, callbacks_for):
    """cnnlab's loop on TensorFlow, Keras' `fit` on JAX and PyTorch (keras_fit.py); with train.fine_tune, the first
    phase and then the second (cnnlab/training/fine_tune.py).

    `callbacks_for(rows, phase, first_epoch)` makes each phase's callbacks, the epochs in `rows` already done.
    """
    config, model = job.config, job.model
    loop = keras_fit
    if backend.is_tensorflow():
        from cnnlab.training import tf_loop as loop  # TensorFlow's own: imported only where TensorFlow is the backend

    def fit(rows, epochs, phase=None, first_epoch=1):
        run_callbacks = callbacks_for(rows, phase, first_epoch)
        loop.fit(job, run_callbacks, epochs, initial_epoch=len(rows), verbose=verbose)
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
    write_plots(run_dir, history, kept_epoch(history, config), config.name)
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


