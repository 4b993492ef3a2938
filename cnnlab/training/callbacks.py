"""The callbacks of a run: Keras' own, configured from the config, and made to carry their state over a resume.

A resumed run must end as it would have without the interruption. Keras resets its
callbacks in `on_train_begin`; the ones here take back what the epochs before the
interruption taught them, from history.csv (cut back to the epoch Keras'
BackupAndRestore holds, so history and weights always agree) and, for the best
weights of early stopping, from files kept in the run folder while it trains.
"""

import json
import os
import time
from pathlib import Path

import keras

from cnnlab.runtime import backend, keras_compat
from cnnlab.rundir import files as run_files, resume_state
from cnnlab.tracking import tensorboard as tensorboard_logs
from cnnlab.config.best_epoch import best_epoch_of, history_of, monitor_of


def make_callbacks(config, run_dir, past_rows, phase=None, first_epoch=1):
    """Keras' own callbacks, configured from the config, writing into the run folder.

    Order matters for a kill between two of them: history is written first and the
    backup last, so a resume never finds an epoch in the backup that history lacks.

    With train.fine_tune, `phase` (1 or 2) is written into each history row, and the
    phase began at `first_epoch`: early stopping and ReduceLROnPlateau count from there,
    as a second `fit` would, while the checkpoint keeps the best of every past epoch.
    The first phase keeps its backup when it ends: the second deletes it once it has
    saved the weights it starts from (cnnlab/training/fine_tune.py). So does a run with
    train.final_fit, so that a resume interrupted in the final fit skips the epochs done.
    """
    cbs = config.train.callbacks
    monitor, mode = monitor_of(config)
    checkpoint_kwargs = dict(cbs["checkpoint"])
    best_epoch = best_epoch_of(history_of(past_rows), monitor, mode)
    if best_epoch:  # a resumed run must not overwrite best.keras with a worse model
        checkpoint_kwargs["initial_value_threshold"] = past_rows[best_epoch - 1][monitor]
    phase_rows = [row for row in past_rows if row["epoch"] >= first_epoch]
    staged = run_dir / run_files.CHECKPOINT_DIR / run_files.MODEL
    callbacks = [EpochLog(run_dir / run_files.HISTORY, past_rows, phase),
                 keras.callbacks.ModelCheckpoint(str(staged), **checkpoint_kwargs),
                 PublishCheckpoint(staged, run_dir / run_files.MODEL),
                 keras.callbacks.TerminateOnNaN()]
    if cbs["early_stopping"] is not None:
        callbacks.append(ResumedEarlyStopping(phase_rows, run_dir / run_files.RESUME_DIR, **cbs["early_stopping"]))
    if cbs["reduce_lr"] is not None:
        callbacks.append(ResumedReduceLROnPlateau(phase_rows, **cbs["reduce_lr"]))
    if cbs["tensorboard"] is not None:
        callbacks.append(tensorboard_logs.make_callback(config, run_dir, first_epoch=len(past_rows)))
    callbacks.append(RandomState(run_dir / run_files.RESUME_DIR / run_files.RANDOM_STATE, len(past_rows)))
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / run_files.BACKUP_DIR), double_checkpoint=True,
                                                      delete_checkpoint=phase != 1 and config.train.final_fit is None))
    return callbacks


def learning_rate(model):
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class EpochLog(keras.callbacks.Callback):
    """Rewrites history.csv atomically after every epoch, so an interruption leaves whole rows only.

    Each row holds the epoch's learning rate as well, the one the epoch trained with:
    a resumed ReduceLROnPlateau replays its decisions with it; and with fine-tuning, its phase.
    """

    def __init__(self, path, past_rows, phase=None):
        super().__init__()
        self.path = path
        self.rows = list(past_rows)
        self.phase = phase
        self.started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}}
        row.setdefault("learning_rate", learning_rate(self.model))
        if self.phase is not None:
            row["phase"] = self.phase
        row["time_s"] = round(time.perf_counter() - self.started, 3)
        self.rows.append(row)
        run_files.write_history(self.path, self.rows)


class PublishCheckpoint(keras.callbacks.Callback):
    """Copies each new ModelCheckpoint file over best.keras atomically.

    ModelCheckpoint writes its file in place; a kill during that write would leave
    a corrupt best.keras, so it writes into a staging folder and this publishes it.
    """

    def __init__(self, staged, published):
        super().__init__()
        self.staged = Path(staged)
        self.published = Path(published)
        self.seen = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.staged.exists():
            return
        stamp = self.staged.stat().st_mtime_ns, self.staged.stat().st_size
        if stamp != self.seen:
            run_files.copy_file(self.staged, self.published)
            self.seen = stamp


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counter, best value and best weights carry over a resume.

    The counter and the best value are replayed from the epochs in history through
    Keras' own `on_epoch_end`, so they follow Keras' rules; if those epochs had already
    decided to stop, training stays stopped. Weights cannot be replayed: with
    `restore_best_weights` each new best epoch's weights are saved in `folder`, and a
    resumed run reads back those of its best epoch, so restoring at the end gives the
    best weights of the whole run, not of the part after the resume.
    """

    def __init__(self, past_rows, folder, **kwargs):
        super().__init__(**kwargs)
        self.past_rows = past_rows
        self.folder = Path(folder)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.past_rows:
            super().on_epoch_end(row["epoch"] - 1, row)
        if self.restore_best_weights and self.past_rows:
            keras_compat.set_early_stopping_best_weights(self, self.saved_best_weights())

    def on_epoch_begin(self, epoch, logs=None):
        # The backup now holds every epoch before this one, so no resume can go back before the best epoch
        if self.restore_best_weights:
            resume_state.remove_best_weights_before(self.folder, keras_compat.early_stopping_best_epoch(self) + 1)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        best_epoch = keras_compat.early_stopping_best_epoch(self)
        if self.restore_best_weights and best_epoch == epoch and keras_compat.early_stopping_best_weights(self) is not None:
            self.folder.mkdir(exist_ok=True)
            path = resume_state.best_weights_path(self.folder, epoch + 1)
            partial = path.with_name(f".partial-{path.name}")  # Keras wants the .weights.h5 ending
            self.model.save_weights(partial)
            os.replace(partial, path)

    def saved_best_weights(self):
        """The weights saved at the best past epoch, read without disturbing the model's own."""
        path = resume_state.best_weights_path(self.folder, keras_compat.early_stopping_best_epoch(self) + 1)
        if not path.exists():  # a run started by an older cnnlab: Keras' rule takes over from here
            return None
        current = self.model.get_weights()
        self.model.load_weights(path)
        best = self.model.get_weights()
        self.model.set_weights(current)
        return best


class ResumedReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait counter, cooldown and best value carry over a resume.

    The past epochs are replayed through Keras' own `on_epoch_end`, each with the
    learning rate it trained with (history.csv), so every reduction decided then is
    decided again by Keras' rule; the rate itself stays as BackupAndRestore restores it.
    """

    def __init__(self, past_rows, **kwargs):
        super().__init__(**kwargs)
        self.past_rows = past_rows

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.past_rows:
            return
        optimizer = self.model.optimizer
        rate, verbose = learning_rate(self.model), self.verbose
        self.verbose = 0  # the reductions were announced when they happened
        try:
            for row in self.past_rows:
                if row.get("learning_rate") is not None:
                    optimizer.learning_rate = row["learning_rate"]
                super().on_epoch_end(row["epoch"] - 1, dict(row))
        finally:
            optimizer.learning_rate = rate
            self.verbose = verbose


class RandomState(keras.callbacks.Callback):
    """Keeps the random layers' generator states beside Keras' backup, so a resumed run draws
    the Dropout masks the uninterrupted run would have drawn.

    BackupAndRestore saves weights, not these states. Each epoch's end records them under
    its number, keeping the previous epoch's too: a kill before the backup of the same epoch
    is written leaves the state of the epoch the backup does hold.
    """

    def __init__(self, path, resumed_epoch):
        super().__init__()
        self.path = Path(path)
        self.resumed_epoch = resumed_epoch

    def on_train_begin(self, logs=None):
        saved = self.saved().get(str(self.resumed_epoch)) if self.resumed_epoch else None
        if isinstance(saved, list):  # written before the global generator's state was kept too
            saved = {"variables": saved}
        if saved is None:
            return
        variables = keras_compat.random_states(self.model)
        if len(saved.get("variables", [])) == len(variables):
            for variable, state in zip(variables, saved["variables"]):
                variable.assign(keras.ops.convert_to_tensor(state, dtype=variable.dtype))
        if saved.get("global") is not None:
            backend.set_global_random_state(saved["global"])

    def on_epoch_end(self, epoch, logs=None):
        variables = keras_compat.random_states(self.model)
        if not variables:
            return
        kept = {key: value for key, value in self.saved().items() if key == str(epoch)}
        # PyTorch's Keras draws an unseeded layer's Dropout masks from torch's global generator, not the layer's own
        kept[str(epoch + 1)] = {"variables": [keras.ops.convert_to_numpy(variable).tolist() for variable in variables],
                                "global": backend.global_random_state()}
        self.path.parent.mkdir(exist_ok=True)
        run_files.write_json(self.path, kept)

    def saved(self):
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
