"""MLflow tracking of runs, fed from the run folder, and never able to lose a run.

The run folder stays the record: every value logged to MLflow is read from its files
(config.yaml, history.csv, metrics.json, best.keras), by the same functions whether a run
is logged live, epoch by epoch, or afterwards by `cnnlab track`. A store that cannot be
reached or written costs its one warning line; the run trains on untracked and ends
complete, and the failure is kept in tracking.json so that `cnnlab track` can log it later.

MLflow is imported inside the functions that use it: cnnlab without the `mlflow` extra
never imports it, and a config that asks for it says how to install it.
"""

import logging
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from cnnlab.rundir import files as run_files, listing, trained
from cnnlab.config.best_epoch import history_of
from cnnlab.config.experiment import load_config, settings_of
from cnnlab.errors import ConfigError, RunError, TrackingError, TrainingInterrupted, first_line, one_line

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # MLflow's RunStatus names
MODEL_NAME = "model"  # the logged Keras model's name in its run
BATCH = 100  # MLflow's limit of params per log_batch request
# MLflow's HTTP client retries for about four minutes by default; a run must not stall that long per call.
# A user's own values of these variables win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# the run folder's parts that are only there while it trains (Keras' backup, staged checkpoints, the lock) or are MLflow's own
UNLOGGED_FILES = (run_files.BACKUP_DIR, run_files.TRACKING)


def check_installed(config):
    """A config that asks for MLflow without it installed fails before its run folder exists."""
    if config.tracking.mlflow is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError("tracking.mlflow", 'needs MLflow, which is not installed: pip install -e ".[mlflow]"') from None


def store_uri(setting, runs_folder):
    """The tracking URI a run is logged to: `true` is the local store beside the runs, anything else as written.

    "Beside the runs" is `runs_folder`, the folder the user gave as --runs-dir (`runs_root`), also
    for the runs a sweep or a comparison holds inside its own folder, so that they land in one
    store with the others.
    """
    if setting is not True:
        return setting
    return f"sqlite:///{Path(runs_folder).resolve() / run_files.MLFLOW_DB}"


def runs_root(run_dir):
    group = run_files.group_of(Path(run_dir).resolve())
    return (group or Path(run_dir).resolve()).parent


def local_artifacts(uri):
    """Where a local SQLite store's artifacts go: beside its database, not into the working directory as MLflow would."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    return (database.parent / run_files.MLFLOW_ARTIFACTS).resolve().as_uri()


@contextmanager
def tracked(run_dir, config, warn=None):
    """Yields the Tracker of a run that trains inside the block, and ends its MLflow run as the block ends.

    A block left by Ctrl-C or SIGTERM ends it KILLED (a resume continues it), by a failure FAILED
    (with the run's files), else FINISHED with the test metrics, the files and the model.
    """
    tracker = Tracker(run_dir, config, warn)
    tracker.start()
    try:
        yield tracker
    except (TrainingInterrupted, KeyboardInterrupt):
        tracker.end(KILLED)
        raise
    except BaseException:
        tracker.end(FAILED)
        raise
    tracker.end(FINISHED)


def track_run(run_dir, uri=None, warn=None):
    """`cnnlab track`: logs a finished run folder, as training would have; returns its Tracker (run_id, uri).

    The store is `uri`, else the one the run tried before (tracking.json), else its config's, else the local one.
    """
    run_dir = Path(run_dir)
    trained.check_run_dir(run_dir)
    status = run_files.read_status(run_dir)
    if status.state not in (run_files.COMPLETED, run_files.FAILED):
        raise RunError(f"{run_dir}: is {status.state}, not finished; finish it first (cnnlab train --resume {run_dir})")
    config = load_config(run_dir / run_files.CONFIG)
    check_installed(config)
    record = read_record(run_dir)
    tracker = Tracker(run_dir, config, warn, uri=uri or record.get("uri") or config.tracking.mlflow or True)
    if record.get("status") == FINISHED and record.get("uri") == tracker.uri and record.get("run_id"):
        tracker.run_id, tracker.already_logged = record["run_id"], True  # logging it again would repeat its model and metrics
        return tracker
    tracker.start()
    tracker.log_new_epochs()
    tracker.end(FINISHED if status.state == run_files.COMPLETED else FAILED)
    if tracker.error:
        raise TrackingError(tracker.error)
    return tracker


def failure_message(run_dir, tracker_error, uri):
    """The line `cnnlab train` ends with when tracking failed: the run is safe, and how to log it."""
    return (f"{tracker_error}; the run is complete in {run_dir}: log it with cnnlab track {run_dir}"
            + (f" --mlflow {uri}" if isinstance(uri, str) else ""))


def check_group_logged(folder, kind):
    """After a comparison or sweep: runs that MLflow could not log fail the command, as `cnnlab train` fails,
    in one line that says they are complete and how to log them."""
    unlogged = [run_dir for run_dir in listing.runs_in_group(folder, kind) if read_record(run_dir).get("error")]
    if unlogged:
        raise TrackingError(f"{len(unlogged)} of the runs in {folder} could not be logged "
                            f"({read_record(unlogged[0])['error']}); they are complete: log them with "
                            f"cnnlab track {' '.join(str(run_dir) for run_dir in unlogged)} --mlflow URI")


def read_record(run_dir):
    path = Path(run_dir) / run_files.TRACKING
    try:
        record = run_files.read_json(path) if path.exists() else {}
    except RunError:
        return {}
    return record if isinstance(record, dict) else {}


class Tracker:
    """One cnnlab run's MLflow run. Every MLflow call goes through `attempt`: the first failure is
    one warning line and turns tracking off for the rest of the run, and `error` keeps that line."""

    def __init__(self, run_dir, config, warn=None, uri=None):
        self.run_dir = Path(run_dir)
        self.config = config
        setting = uri if uri is not None else config.tracking.mlflow
        self.uri = None if setting is None else store_uri(setting, runs_root(run_dir))
        self.experiment = config.tracking.experiment or config.name
        self.warn = warn or (lambda text: print(f"Warning: {text}", file=sys.stderr, flush=True))
        self.client = None
        self.run_id = None
        self.logged_epochs = 0  # epochs the MLflow run already has: a resume or `cnnlab track` logs only the others
        self.error = None
        self.already_logged = False
        self.callbacks = [] if self.uri is None else [epoch_callback(self)]

    @property
    def active(self):
        return self.uri is not None and self.error is None

    def attempt(self, what, action):
        """Runs `action` (MLflow calls); a failure of any kind is this run's one tracking failure. No-op once tracking is off."""
        if not self.active:
            return
        with quiet_mlflow():
            try:
                action()
            except Exception as exc:
                self.error = one_line(f"MLflow tracking at {self.uri} failed: {what}: {first_line(exc)}")
                self.warn(f"{self.error}; training goes on without it")
                self.write_record()

    def start(self):
        """Opens the MLflow run (the run's own from tracking.json in the same store, else a new one) and logs its params."""
        if self.uri is None:
            return
        use_http_defaults()
        self.attempt(f"starting its run in experiment {self.experiment!r}", self.open)

    def open(self):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment_id = self.experiment_id()
        record = read_record(self.run_dir)
        if record.get("uri") == self.uri and record.get("run_id"):
            self.reopen(record["run_id"])
        else:
            self.create(experiment_id)
        self.write_record()

    def experiment_id(self):
        return experiment_id(self.client, self.experiment, self.uri)

    def create(self, experiment_id):
        tags = {"cnnlab.run_dir": str(self.run_dir.resolve()), "cnnlab.backend": run_files.read_backend(self.run_dir),
                "cnnlab.config": self.config.name}
        group = run_files.group_of(self.run_dir.resolve())
        if group is not None:
            tags["cnnlab.group"] = group.name
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        log_params(self.client, self.run_id, self.config)

    def reopen(self, run_id):
        """The run a resume continues: marked running again, its epochs counted so none is logged twice."""
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        steps = [metric.step for key in self.client.get_run(run_id).data.metrics
                 for metric in self.client.get_metric_history(run_id, key)]
        self.logged_epochs = max(steps) + 1 if steps else 0

    def log_new_epochs(self):
        """Logs the epochs of history.csv the MLflow run lacks, each at step = its 0-based epoch, as Keras' own callback does."""
        if (self.run_dir / run_files.HISTORY).exists():
            self.attempt("logging epochs", self.log_epochs)

    def log_epochs(self):
        for row in run_files.read_history_rows(self.run_dir / run_files.HISTORY)[self.logged_epochs:]:
            log_metrics(self.client, self.run_id, epoch_metrics(row), step=row["epoch"] - 1)
            self.logged_epochs = row["epoch"]

    def end(self, status):
        """Ends the MLflow run: a finished run's summary metrics, files and model first, a failed run's files."""
        if status != KILLED:
            self.log_new_epochs()  # a run stopped early by its last epoch's callbacks, or one logged afterwards
            self.attempt("logging the run folder's files", lambda: (log_summary(self.client, self.run_id, self.run_dir),
                                                                    log_files(self.client, self.run_id, self.run_dir)))
        if status == FINISHED and (self.run_dir / run_files.MODEL).is_file():
            self.attempt("logging the model", lambda: log_model(self.uri, self.run_id, self.run_dir / run_files.MODEL))
        self.attempt(f"ending the run {status}", lambda: (self.client.set_terminated(self.run_id, status), self.write_record(status)))

    def write_record(self, status=None):
        """tracking.json: where the run is logged (so a resume continues that MLflow run) or why it is not."""
        record = {"uri": self.uri, "experiment": self.experiment, "run_id": self.run_id, "status": status, "error": self.error}
        try:
            run_files.write_json(self.run_dir / run_files.TRACKING, record)
        except RunError as exc:
            self.warn(str(exc))


def experiment_id(client, name, uri):
    """The experiment's id in the store, made where it is not there yet (with its artifacts beside a local store)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=local_artifacts(uri))


def prepare_store(config, group_dir):
    """Makes the store's tables and the experiment once, before a comparison's or sweep's runs start.

    Its runs may start side by side (--jobs), and two processes making a new SQLite store's
    tables at once failed ("duplicate column name"), as two making one experiment would. A
    failure here is left to the runs: each says it in one line, and the command's end names them.
    """
    if config.tracking.mlflow is None:
        return
    from mlflow import MlflowClient

    uri = store_uri(config.tracking.mlflow, Path(group_dir).resolve().parent)
    use_http_defaults()
    with quiet_mlflow():
        try:
            experiment_id(MlflowClient(tracking_uri=uri), config.tracking.experiment or config.name, uri)
        except Exception:  # reported by every run that tries the store: see the docstring
            pass


def use_http_defaults():
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def epoch_callback(tracker):
    """The Keras callback that logs each epoch once the run's own callbacks have written it into history.csv."""
    import keras

    class EpochsToMlflow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracker.log_new_epochs()

    return EpochsToMlflow()


def epoch_metrics(row):
    """One history.csv row as MLflow metrics: Keras' logs and the learning rate, not the epoch number, phase or time."""
    return {key: values[0] for key, values in history_of([row]).items() if key != "time_s"}


def log_metrics(client, run_id, metrics, step=0):
    from mlflow.entities import Metric

    import time

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])


def params_of(config):
    """The resolved config, one param per setting, named by its path: `model.layers.0.Conv2D.filters` for what error
    messages write `model.layers[0].Conv2D.filters`, as MLflow refuses brackets in a param's name."""
    return {param_name(path): str(value) for path, value in settings_of(config).items()}


def param_name(path):
    return re.sub(r"\[(\d+)\]", r".\1", path)


def log_params(client, run_id, config):
    from mlflow.entities import Param

    items = list(params_of(config).items())
    for start in range(0, len(items), BATCH):
        client.log_batch(run_id, params=[Param(key, value) for key, value in items[start:start + BATCH]])


def log_summary(client, run_id, run_dir):
    """metrics.json's test scores as test_<metric> and the best epoch's validation scores as best_<metric>."""
    path = Path(run_dir) / run_files.METRICS
    if not path.exists():
        return
    metrics = run_files.read_json(path)
    summary = {f"test_{key}": value for key, value in (metrics.get("test") or {}).items()}
    summary.update({f"best_{key}": value for key, value in (metrics.get("best") or {}).items()})
    if metrics.get("best_epoch"):
        summary["best_epoch"] = metrics["best_epoch"]
    log_metrics(client, run_id, summary)


def log_files(client, run_id, run_dir):
    """The run folder as artifacts, less Keras' backup, tracking.json and hidden files (lock, staging, resume state)."""
    run_dir = Path(run_dir)
    for folder, dirs, files in os.walk(run_dir):
        here = Path(folder).relative_to(run_dir)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here == Path(".") and d in UNLOGGED_FILES))
        for name in sorted(files):
            if name.startswith(".") or (here == Path(".") and name in UNLOGGED_FILES):
                continue
            client.log_artifact(run_id, str(Path(folder) / name), artifact_path=None if here == Path(".") else here.as_posix())


def log_model(uri, run_id, model_path):
    """best.keras as an MLflow Keras model named `model` (mlflow.keras.load_model loads it), its requirements given
    rather than inferred, which would load the model again in a subprocess."""
    import keras
    import mlflow

    from cnnlab.runtime import backend

    model = trained.load_model(model_path)
    requirements = [f"keras=={keras.__version__}"]
    name = backend.name()
    if name != "numpy":
        requirements.append(f"{'torch' if name == 'torch' else name}=={backend.version(name)}")
    with store_in_use(uri), mlflow.start_run(run_id=run_id):
        mlflow.keras.log_model(model, name=MODEL_NAME, pip_requirements=requirements)


@contextmanager
def store_in_use(uri):
    """MLflow's model logging reads the process-wide tracking URI: this run's for the block, the user's again after."""
    import mlflow

    from_environment = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        if from_environment is not None:
            os.environ["MLFLOW_TRACKING_URI"] = from_environment


@contextmanager
def quiet_mlflow():
    """MLflow's own log lines (a new database's tables, a model without a signature) are noise beside cnnlab's output."""
    import mlflow  # noqa: F401  (its first import sets its loggers' levels: before they are changed here)

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
