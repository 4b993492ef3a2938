"""A run's TensorBoard logs: Keras' own TensorBoard callback, continued across a resume, and an HParams summary.

Keras' callback writes what `fit` writes (train/ and validation/ curves, the learning
rate, the graph, histograms), whichever loop trains: it only listens to the callback
calls, which cnnlab's loop makes as `fit` does. Two things it cannot know:

- A resumed run is a second `fit` from a later epoch. Keras would number its batch-level
  steps from 0 again, and the interrupted run may have logged epochs that its backup does
  not hold, which are trained again. So before each `fit` the event files already in the
  folder are cut back to the epoch it starts from, and its steps are numbered on from there:
  every step once, as one uninterrupted run would have them.
- Runs are compared in TensorBoard's HParams dashboard by their settings. Each run writes
  its config values (one per path, as error messages name them) as the HParams of one
  session, the `tensorboard/` folder, whose scalars (train/, validation/, and the best and
  test results written when the run ends) are the session's metrics.

Only TensorBoard's own Python package is used to read and write the files here, so this
works alike on every Keras backend.
"""

import io
import math
import time
from pathlib import Path

import keras

from cnnlab.rundir import files as run_files
from cnnlab.runtime import keras_compat

HPARAMS_FILE = "events.out.tfevents.cnnlab-hparams.v2"  # TensorBoard reads any file named *tfevents*
RESULT_GROUPS = ("best", "test")


class RunTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard, for a `fit` that starts at `first_epoch` (0 for a new run).

    `steps_per_execution` is the run's: batch-level steps count compiled calls, as under `fit`.
    `session` is (trial name, {hparam: value}), written as the run's HParams when training begins.
    Keras' private parts of the callback are reached through cnnlab/runtime/keras_compat.py, each tested there.
    """

    def __init__(self, first_epoch=0, steps_per_execution=1, session=None, **kwargs):
        super().__init__(**kwargs)
        self.first_epoch = first_epoch
        self.steps_per_execution = steps_per_execution
        self.session = session
        self.epoch = first_epoch
        self.earlier_files = event_files(Path(self.log_dir))  # before this callback writes its own

    def on_train_begin(self, logs=None):
        calls = self.first_epoch * calls_per_epoch(self.params.get("steps") or 0, self.steps_per_execution)
        iterations = self.first_epoch * (self.params.get("steps") or 0)
        for path in self.earlier_files:
            trim_event_file(path, self.first_epoch, calls, iterations)
        if self.session is not None:
            write_session(Path(self.log_dir), *self.session)
        super().on_train_begin(logs)
        keras_compat.set_tensorboard_train_step(self, calls)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.epoch = epoch

    def on_test_end(self, logs=None):
        """Keras' `evaluation_*_vs_iterations`, numbered by the batches trained since the run began.

        Keras numbers them by the optimizer's step count, which the new optimizer of a
        fine-tuning phase starts again from 0; for one optimizer the two are the same.
        """
        step = (self.epoch + 1) * (self.params.get("steps") or 0)
        with keras_compat.tensorboard_validation_writer(self).as_default():
            for name, value in (logs or {}).items():
                self.summary.scalar(f"evaluation_{name}_vs_iterations", value, step=step)
        keras_compat.pop_tensorboard_writer(self)

    def on_epoch_end(self, epoch, logs=None):
        """Keras' epoch summaries, flushed before the backup of the epoch is written (this callback comes
        first): an epoch that a resume does not train again is never missing from the logs after a kill."""
        super().on_epoch_end(epoch, logs)
        for writer in keras_compat.tensorboard_writers(self):
            writer.flush()

    def close(self):
        """Closes the event files of a `fit` that was interrupted (Keras closes them only when training ends),
        so nothing this process still holds is written after a resume in the same process has begun, and
        takes back the default writer Keras set for batch-level summaries, which would outlive its file."""
        keras_compat.close_tensorboard(self)


def calls_per_epoch(steps, steps_per_execution):
    return math.ceil(steps / max(1, steps_per_execution))


def event_files(log_dir):
    """The event files Keras' callback writes (train/, validation/), oldest first as TensorBoard reads them."""
    return sorted(path for folder in ("train", "validation") for path in (log_dir / folder).glob("*tfevents*")
                  if path.is_file())


def make_callback(config, run_dir, first_epoch):
    """The run's TensorBoard callback from `train.callbacks.tensorboard`, logging into <run>/tensorboard."""
    kwargs = dict(config.train.callbacks["tensorboard"])
    session = (trial_name(run_dir), hparams_of(config))
    return RunTensorBoard(first_epoch=first_epoch, steps_per_execution=config.train.steps_per_execution, session=session,
                          log_dir=str(run_dir / run_files.TENSORBOARD), **kwargs)


def batch_level(tensorboard_kwargs):
    """Whether the TensorBoard callback logs batch-level steps (`update_freq` other than "epoch")."""
    return tensorboard_kwargs is not None and tensorboard_kwargs.get("update_freq", "epoch") != "epoch"


# ---------------------------------------------------------------- resuming


def kept_after_resume(event, first_epoch, calls, iterations):
    """Whether an event written before a `fit` that starts at `first_epoch` stays in the logs.

    Epoch-level summaries (epoch_*, histograms, images) are numbered by epoch, batch-level
    ones (batch_*) by compiled call, and `evaluation_*_vs_iterations` by batches trained;
    each is kept up to where the new `fit` begins. The graph and the model's config are
    written again by the new callback, so the old ones go.
    """
    if event.HasField("graph_def") or event.HasField("meta_graph_def") or event.HasField("tagged_run_metadata"):
        return False
    if not event.HasField("summary") or not event.summary.value:
        return True  # the file's version record
    tag = event.summary.value[0].tag
    if tag == "keras":
        return False
    if tag.startswith("batch_"):
        return event.step <= calls
    if tag.startswith("evaluation_") and tag.endswith("_vs_iterations"):
        return event.step <= iterations
    return event.step < first_epoch


def trim_event_file(path, first_epoch, calls, iterations):
    """Rewrites an event file without the events a resumed `fit` writes again; removes it if none is left."""
    from tensorboard.compat.proto.event_pb2 import Event

    events = [(record, Event.FromString(record)) for record in read_records(path)]
    kept = [(record, event) for record, event in events if kept_after_resume(event, first_epoch, calls, iterations)]
    if len(kept) == len(events):
        return
    if not any(event.HasField("summary") for _, event in kept):
        path.unlink()
        return
    write_records(path, [record for record, _ in kept])


def read_records(path):
    """The serialized events of a file, in order; a record cut off by a kill at its end is left out."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return list(RawEventFileLoader(str(path)).Load())


def write_records(path, records):
    """Writes serialized events as one event file, atomically: TensorBoard never sees half of it."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for record in records:
        writer.write(record)
    run_files.write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- HParams


def trial_name(run_dir):
    """How the HParams dashboard names the run: its folder, and its sweep's or comparison's where it is in one.

    The run's own name comes first: the dashboard's narrow Trial ID column shows the start of it.
    """
    group = run_files.group_of(run_dir)
    return Path(run_dir).name if group is None else f"{Path(run_dir).name} in {group.name}"


def hparams_of(config):
    """The run's settings as HParams: one per config path, numbers and booleans as they are, anything else as text.

    Every run of a comparison or sweep has the same paths, so the dashboard lines them up
    column by column; the backend the run trained on is one more.
    """
    from cnnlab.runtime import backend
    from cnnlab.config.experiment import settings_of

    values = {path: hparam_value(value) for path, value in settings_of(config, leave_out=("name",)).items()}
    values["backend"] = backend.name()
    return values


def hparam_value(value):
    if isinstance(value, (bool, int, float, str)):
        return value
    import json

    return json.dumps(value)  # None → "null", [3, 3] → "[3, 3]": text a reader recognizes


def write_session(log_dir, trial, hparams):
    """Writes the run's HParams (a session start) as the first events of the HParams file, replacing any earlier one.

    A resumed run writes it again: the results of an earlier end are stale once it trains on.
    """
    from tensorboard.plugins.hparams import summary_v2

    summary = summary_v2.hparams_pb(hparams, trial_id=trial, start_time_secs=int(time.time()))
    log_dir.mkdir(parents=True, exist_ok=True)
    write_records(log_dir / HPARAMS_FILE, [version_record(), event_record(summary, step=0)])


def write_results(log_dir, metrics):
    """Adds the run's results to its HParams session as scalars: `best/<metric>` (the validation metrics at
    the checkpoint's best epoch, and `best/epoch`) and `test/<metric>` (best.keras on the test split).

    The session's last values of train/ and validation/ are its final epoch's already.
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    path = log_dir / HPARAMS_FILE
    if not path.is_file():
        return
    scalars = result_scalars(metrics)
    step = max(0, (metrics.get("epochs_run") or 1) - 1)
    records = [record for record in read_records(path) if not is_result(Event.FromString(record))]
    records += [event_record(scalar_pb(tag, value), step) for tag, value in scalars.items()]
    write_records(path, records)


def result_scalars(metrics):
    """metrics.json's best and test results as {tag: value}; metrics that were never finite are left out."""
    scalars = {}
    if metrics.get("best_epoch"):
        scalars["best/epoch"] = metrics["best_epoch"]
        scalars.update({f"best/{key}": value for key, value in metrics["best"].items()})
    scalars.update({f"test/{key}": value for key, value in (metrics.get("test") or {}).items()})
    return {tag: float(value) for tag, value in scalars.items() if value is not None and math.isfinite(value)}


def is_result(event):
    return event.HasField("summary") and any(value.tag.split("/")[0] in RESULT_GROUPS for value in event.summary.value)


def version_record():
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()


def event_record(summary, step):
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(wall_time=time.time(), step=step, summary=summary).SerializeToString()


def log_dir_of(run_dir):
    return Path(run_dir) / run_files.TENSORBOARD


def has_logs(config):
    return config.train.callbacks["tensorboard"] is not None

