"""The run folder: the only module that knows its file names, creates it, and writes into it.

Every write goes to a temporary file in the same folder, is flushed to disk and
renamed over the target, so a crash never leaves a half-written JSON or YAML.
"""

import csv
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from cnnlab.errors import ConfigError, RunError, first_line
from cnnlab.runtime.keras_compat import BACKUP_METADATA, BACKUP_WEIGHTS
from cnnlab.config.metric_names import accuracy_key
from cnnlab.tracking.tables import RIGHT, Column, format_table
from cnnlab.config.yaml_safety import load_yaml

CONFIG = "config.yaml"
SUMMARY = "model_summary.txt"
MODEL = "best.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
CLASS_NAMES = "class_names.json"
ENV = "env.json"
PREPROCESSING = "preprocessing.json"
STATUS = "status"
LOSS_PLOT = "loss.png"
ACCURACY_PLOT = "accuracy.png"
TENSORBOARD = "tensorboard"
EVAL_DIR = "eval"  # written by `cnnlab evaluate`, beside what train wrote and never over it
VISUALIZE_DIR = "visualize"  # written by `cnnlab visualize`: filters_<layer>.png, feature_maps_<layer>.png, augmentation.png, ...
ARCHITECTURE_PNG = "architecture.png"  # keras.utils.plot_model, when pydot and Graphviz are installed
ARCHITECTURE_TXT = "architecture.txt"  # the same information as text otherwise
VISUALIZE_INDEX = "index.html"
EXPORT_DIR = "export"  # written by `cnnlab export` (unless --output names another folder)
EXPORT_RECORD = "export.json"  # in the export folder: what each exported file is, takes, gives, and how it was checked
# the file (or, for a SavedModel, the folder) each export format writes into the export folder
EXPORT_FILES = {"savedmodel": "saved_model", "tflite": "model.tflite", "tflite-dynamic": "model_dynamic.tflite",
                "tflite-int8": "model_int8.tflite"}
EXPORT_STAGING = ".staging-"  # prefix of the hidden folder an export is built and checked in before it is published
AUGMENTATION_PNG = "augmentation.png"  # training images as model.augmentation changes them: what the network sees
CHECKPOINT_DIR = ".checkpoint"  # ModelCheckpoint writes here; best.keras is published from it atomically
RESUME_DIR = ".resume"  # what a resume needs besides Keras' backup: best weights, random layers' state; kept while a run trains
RANDOM_STATE = "random_state.json"  # in RESUME_DIR: {completed epochs: the random generators' states then}
FINE_TUNE_START = "fine_tune_start.npz"  # in RESUME_DIR: the weights fine-tuning (train.fine_tune) starts from, and its first epoch
LOCK = ".lock"  # held by the process that trains the run; holds its PID
BACKUP_DIR = "backup"  # Keras' BackupAndRestore state (weights, optimizer, epoch) while a run is unfinished
FAILURE_LOG = "failure.txt"  # a failed sweep trial's or comparison run's traceback: what --debug would have printed
TRACKING = "tracking.json"  # the MLflow run this run is logged to (cnnlab/tracking/mlflow.py), so a resume continues it
MLFLOW_DB = "mlflow.db"  # tracking.mlflow: true: the MLflow store beside the run folders, and its artifacts
MLFLOW_ARTIFACTS = "mlartifacts"

SWEEP_PLAN = "sweep.json"  # marks a sweep folder (cnnlab sweep); its trials' run folders are under trials/
SWEEP_TRIALS_DIR = "trials"
SWEEP_TRIALS_CSV = "trials.csv"
COMPARE_PLAN = "compare.json"  # marks a comparison folder (cnnlab compare-optimizers); its run folders are inside it
COMPARE_INITIAL_WEIGHTS = "initial-s{seed}.weights.h5"  # in a comparison folder: the starting weights of every run of a seed
GROUP_PLANS = {"sweep": SWEEP_PLAN, "compare": COMPARE_PLAN}  # `<kind>-<name>-<timestamp>/` folders that hold runs
GROUP_NOUNS = {"sweep": "sweep", "compare": "comparison"}

RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"


@dataclass(frozen=True)
class RunStatus:
    state: str
    reason: str = ""


def run_dir_name(name, when):
    return f"{name}-{when:%Y%m%d-%H%M%S}"


def create_run_dir(runs_dir, name, when=None):
    """Creates a new, empty run folder; never reuses one, even for two runs started in the same second."""
    runs_dir = Path(runs_dir)
    base = run_dir_name(name, when or datetime.now())
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the runs folder {runs_dir}: {exc.strerror or exc}") from exc
    for n in range(1, 10_000):
        candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()  # atomic: fails if another process made it first
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create a run folder in {runs_dir}: {exc.strerror or exc}") from exc
    raise RunError(f"too many runs named {base} in {runs_dir}")


@contextmanager
def atomic_file(path, mode="w"):
    """Yields a temporary file beside `path`; on success it is flushed, fsynced and renamed over `path`."""
    path = Path(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; run folders are meant to be shared and read
            with os.fdopen(fd, mode, encoding=encoding, newline="" if encoding else None) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_text(path, text):
    with atomic_file(path) as f:
        f.write(text)


def write_bytes(path, content):
    with atomic_file(path, "wb") as f:
        f.write(content)


def write_history(path, rows):
    """history.csv: one row per completed epoch, 1-based like Keras' progress bar and `best_epoch`."""
    columns = ["epoch"] + sorted({key for row in rows for key in row if key != "epoch"})
    with atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_history_rows(path):
    """history.csv as a list of rows (dicts of floats, `epoch` as int), for appending on resume."""
    history = read_history(path)
    columns = list(history)
    return [{key: history[key][i] for key in columns} for i in range(len(history.get("epoch", [])))]


def read_history(path):
    """history.csv as {column: [values]}, epochs (and fine-tuning's phases) as ints."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from exc
    columns = rows[0].keys() if rows else []
    return {key: [int(row[key]) if key in ("epoch", "phase") else float(row[key]) for row in rows] for key in columns}


def copy_file(source, target):
    """Atomic copy: the target is either the old file or the whole new one."""
    with atomic_file(target, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, length=1 << 20)


def backup_epoch(run_dir):
    """Completed epochs held by the run's BackupAndRestore state; 0 when it has none (killed in epoch 1).

    Keras saves an epoch in four steps, in place: the weights, then the metadata, are
    copied to `.bkp` (double_checkpoint), then the new weights and the new metadata are
    written. A kill or Ctrl-C inside the last two can leave the newest metadata cut off,
    or the newest weights cut off beside metadata that still names the epoch before, the
    epoch the `.bkp` pair already holds whole. Either way this puts that `.bkp` pair in
    place where Keras will look for it.
    """
    backup = Path(run_dir) / BACKUP_DIR
    latest = backup / BACKUP_METADATA
    previous = backup / f"{BACKUP_METADATA}.bkp"
    weights = backup / BACKUP_WEIGHTS
    epoch = read_backup_metadata(latest)
    if epoch is not None:
        if epoch == read_backup_metadata(previous) and Path(f"{weights}.bkp").is_file():
            copy_file(Path(f"{weights}.bkp"), weights)  # stopped while writing this epoch's successor's weights
        return epoch
    epoch = read_backup_metadata(previous)
    if epoch is None:
        shutil.rmtree(backup, ignore_errors=True)  # nothing usable: start the run's epochs again
        return 0
    copy_file(Path(f"{weights}.bkp"), weights)
    copy_file(previous, latest)
    return epoch


def read_backup_metadata(path):
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def best_weights_path(folder, epoch):
    return Path(folder) / f"epoch-{epoch}.weights.h5"


def remove_best_weights_before(folder, epoch):
    """Deletes the saved best weights of epochs before `epoch` (1-based): a later best has replaced them."""
    for path in Path(folder).glob("epoch-*.weights.h5"):
        number = path.name.removeprefix("epoch-").removesuffix(".weights.h5")
        if number.isdigit() and int(number) < epoch:
            path.unlink(missing_ok=True)


@contextmanager
def training_lock(run_dir):
    """Held while a process trains the run, so that a second `train --resume` cannot write into it too.

    An advisory lock (flock) on a file in the run folder: the kernel drops it when its
    process ends, however it ends, so a killed run can be resumed at once, while a
    running one names its PID to whoever else tries. A completed run loses the file;
    so whoever takes the lock must read the run's status after taking it.
    """
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunError(f"{run_dir} is being trained by process {owner} (it holds {path}); "
                           "wait for it to end or stop it, then resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
        if read_status(run_dir).state == COMPLETED:  # nothing more will train here; whoever waits re-reads the status
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing releases the lock


def save_figure(fig, path):
    """Writes the figure as a PNG atomically, then closes it: saving is always a figure's last use,
    and pyplot keeps every open figure in memory until it is closed."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc


def read_backend(run_dir, default="tensorflow"):
    """The Keras backend a run trained on, from env.json; runs from before cnnlab had backends trained on TensorFlow.

    `default` where the run has no readable env.json (None for `cnnlab runs`, which shows that as unknown).
    """
    try:
        env = read_json(Path(run_dir) / ENV)
    except RunError:
        return default
    return env.get("backend", "tensorflow") if isinstance(env, dict) else default


def set_status(run_dir, state, reason=""):
    """`status` holds the state on its first line and, for failures, the reason on the second."""
    write_text(Path(run_dir) / STATUS, f"{state}\n{reason}\n" if reason else f"{state}\n")


def read_status(run_dir):
    try:
        lines = (Path(run_dir) / STATUS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return RunStatus("unknown", "no status file")
    return RunStatus(lines[0].strip() if lines else "unknown", lines[1].strip() if len(lines) > 1 else "")


# ---------------------------------------------------------------- evaluation files


@dataclass(frozen=True)
class EvalPaths:
    report: Path
    confusion_matrix: Path
    misclassified: Path


def eval_paths(run_dir, split):
    """eval/<split>.json and its two figures; `split` is test, val or data-<name>."""
    folder = Path(run_dir) / EVAL_DIR
    return EvalPaths(folder / f"{split}.json", folder / f"{split}_confusion_matrix.png", folder / f"{split}_misclassified.png")


def create_eval_dir(run_dir):
    return create_subdir(run_dir, EVAL_DIR)


def create_subdir(run_dir, name):
    """A folder inside the run for a later command's output (eval/, visualize/); existing is fine."""
    folder = Path(run_dir) / name
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    return folder


# ---------------------------------------------------------------- visualize files


def filters_path(run_dir, layer_name):
    return Path(run_dir) / VISUALIZE_DIR / f"filters_{safe_file_part(layer_name)}.png"


def feature_maps_path(run_dir, layer_name):
    return Path(run_dir) / VISUALIZE_DIR / f"feature_maps_{safe_file_part(layer_name)}.png"


def augmentation_path(run_dir):
    return Path(run_dir) / VISUALIZE_DIR / AUGMENTATION_PNG


def safe_file_part(name):
    """A layer name as part of a file name; cnnlab's own names (conv2d_1) pass unchanged."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "layer"


def create_visualize_dir(run_dir):
    return create_subdir(run_dir, VISUALIZE_DIR)


# ---------------------------------------------------------------- export files


def export_folder(run_dir, output=None):
    """Where `cnnlab export` writes: --output when given, else <run>/export/."""
    return Path(output) if output is not None else Path(run_dir) / EXPORT_DIR


@contextmanager
def export_staging(folder):
    """A hidden folder inside `folder` in which an export is built and checked, removed afterwards whatever happens.

    Inside the export folder, so that publishing is a rename on one file system. `folder` is
    created where missing, and removed again where this made it and nothing was published.
    """
    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(folder)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{EXPORT_STAGING}{os.getpid()}-"))
    except OSError as exc:
        raise RunError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            try:
                folder.rmdir()  # only where it is empty: nothing was published
            except OSError:
                pass


def remove_abandoned_staging(folder):
    """Removes the staging folders of exports whose process is gone: one killed mid-export (SIGKILL, a power cut)
    could not remove its own. Each is named after its process (.staging-PID-…), so another export's is left alone."""
    for path in Path(folder).glob(f"{EXPORT_STAGING}*"):
        pid = path.name[len(EXPORT_STAGING):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def process_alive(pid):
    """Whether a process of this machine is still there (a killed export's, a sweep trial's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def publish(staged, target, staging):
    """Moves a finished, checked file or folder from the staging folder to `target`, replacing an older one whole.

    A file is renamed over the old one (atomic). A folder (a SavedModel) cannot be renamed
    over a folder, so the old one is first moved into `staging` (removed with it) and the
    new one renamed into place; every file is flushed to disk before either rename.
    """
    staged, target = Path(staged), Path(target)
    try:
        for path in ([staged] if staged.is_file() else sorted(p for p in staged.rglob("*") if p.is_file())):
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        if staged.is_dir() and target.exists():
            os.replace(target, Path(staging) / f"replaced-{target.name}")
        os.replace(staged, target)
    except OSError as exc:
        raise RunError(f"cannot write {target}: {exc.strerror or exc}") from exc


def size_in_bytes(path):
    """A file's size, or the total of the files in a folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------- trained runs, for evaluate and predict


@dataclass(frozen=True)
class TrainedRun:
    """What evaluate and predict need from a run folder: its config, classes, preprocessing and best model."""

    path: Path
    config: object  # cnnlab.config.experiment.ExperimentConfig
    class_names: tuple
    preprocessing: dict  # preprocessing.json as train wrote it
    model: object  # keras.Model


def load_trained_run(run_dir):
    """Reads a run folder and loads its best model; every missing or inconsistent piece is one RunError line."""
    from cnnlab.config.experiment import load_config

    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    model_path = run_dir / MODEL
    if not model_path.is_file():
        status = read_status(run_dir)
        state = f"{status.state}: {status.reason}" if status.reason else status.state
        raise RunError(f"{run_dir}: no {MODEL} in this run folder (status {state}); train a model first or pick another run")
    config = load_config(run_dir / CONFIG)
    class_names = read_class_names(run_dir / CLASS_NAMES)
    record = read_preprocessing(run_dir / PREPROCESSING)
    model = load_model(model_path)
    check_model_fits(model, model_path, record, class_names)
    return TrainedRun(path=run_dir, config=config, class_names=class_names, preprocessing=record, model=model)


def check_run_dir(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"{run_dir}: run folder not found")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: is not a folder; expected a run folder made by cnnlab train")
    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir}: not a run folder (no {CONFIG}, {STATUS} or {MODEL}); expected a folder made by cnnlab train")


def read_class_names(path):
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunError(f"{path}: expected a non-empty JSON list of class names")
    return tuple(names)


def read_preprocessing(path):
    """preprocessing.json, checked enough that evaluate and predict can rely on it."""
    from cnnlab.data.preprocessing import output_shape, preprocessing_from_record

    record = read_json(path)
    try:
        shape = record["image_shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"image_shape {shape!r}")
        output_shape(preprocessing_from_record(record), shape)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise RunError(f"{path}: expected the image_shape, color_mode, image_size, pad_to and rescale that train records; bad or missing {exc}") from exc
    return record


def load_model(path):
    """keras.models.load_model with its safe mode on (a .keras file cannot run arbitrary code), without its compile state.

    A trained model is only ever run here: evaluate compiles it from the run's config.
    The compile state could not travel anyway: Keras on PyTorch saves its optimizer as
    `keras.src.backend.torch.optimizers...`, which another backend would import, PyTorch
    with it (a crash in one process with TensorFlow), or fail to find where it is absent.
    """
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # zip, HDF5 and deserialisation failures all come as different types
        raise RunError(f"{path}: cannot load the model: {first_line(exc)}") from exc


def check_model_fits(model, model_path, record, class_names):
    """The model must take what preprocessing.json produces and output one value per class (or one sigmoid for two)."""
    from cnnlab.data.preprocessing import check_input_shape, output_shape, preprocessing_from_record

    prep = preprocessing_from_record(record)
    produced = list(output_shape(prep, record["image_shape"]))
    expected = list(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    try:
        if expected is None:
            raise ConfigError(None, "several inputs")
        check_input_shape(prep, record["image_shape"], expected)
    except ConfigError:
        raise RunError(f"{model_path}: takes inputs of shape {expected} but {PREPROCESSING} turns the run's "
                       f"{record['image_shape']} images into {produced}; the run folder's files disagree") from None
    units = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if units != len(class_names) and not (units == 1 and len(class_names) == 2):
        raise RunError(f"{model_path}: outputs {units} values per image but {CLASS_NAMES} lists {len(class_names)} classes")


# ---------------------------------------------------------------- listing runs (no TensorFlow)


RUN_MARKERS = (STATUS, CONFIG, METRICS, MODEL)  # a folder holding none of these is not a run
RUN_TIME = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")  # run_dir_name's timestamp and create_run_dir's counter
BROKEN = "broken"


def is_run_dir(path):
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def started_at(run_dir):
    """(start time, same-second counter) from the folder name; the folder's mtime for folders named otherwise."""
    run_dir = Path(run_dir)
    match = RUN_TIME.search(run_dir.name)
    if match:
        try:
            return datetime.strptime(match.group(1), "%Y%m%d-%H%M%S"), int(match.group(2) or 1)
        except ValueError:
            pass
    return datetime.fromtimestamp(run_dir.stat().st_mtime).replace(microsecond=0), 1


def find_runs(runs_dir):
    """Run folders directly under `runs_dir`, newest first; sweeps, comparisons, other folders and files are skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunError(f"{runs_dir}: runs folder not found; train a model with cnnlab train CONFIG --runs-dir {runs_dir}")
    try:
        found = [p for p in runs_dir.iterdir() if not p.name.startswith(".") and is_run_dir(p) and not is_group(p)]
    except OSError as exc:
        raise RunError(f"cannot list {runs_dir}: {exc.strerror or exc}") from exc
    return sorted(found, key=lambda p: (*started_at(p), p.name), reverse=True)


def newest_completed_run(runs_dir):
    """The newest run whose status is completed; a broken newer run is not silently skipped over an older one's status."""
    for run_dir in find_runs(runs_dir):
        if read_status(run_dir).state == COMPLETED:
            return run_dir
    raise RunError(f"{runs_dir}: no completed run in this folder; train one with cnnlab train CONFIG --runs-dir {runs_dir}, or pass --run RUN_DIR")


def summarize_run(run_dir):
    """One row of `cnnlab runs`, from the run's small files only; what is missing or unreadable marks it broken.

    Test accuracy comes from eval/test.json when the run was evaluated, else from metrics.json.
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    row = {"name": run_dir.name, "path": str(run_dir), "config": None, "backend": read_backend(run_dir, default=None),
           "status": status.state, "reason": status.reason or None,
           "started": started_at(run_dir)[0].isoformat(), "epochs": None, "best_epoch": None, "best_val_accuracy": None,
           "test_accuracy": None, "test_accuracy_from": None, "train_time_s": None}
    problems = [] if status.state != "unknown" else [status.reason]
    try:
        row["config"] = read_config_name(run_dir / CONFIG)
    except RunError as exc:
        problems.append(str(exc))
    metrics_path = run_dir / METRICS
    if metrics_path.exists() or status.state == COMPLETED:
        try:
            metrics = read_json_object(metrics_path)
            best, test = metrics.get("best") or {}, metrics.get("test") or {}
            row.update(epochs=as_number(metrics.get("epochs_run")), best_epoch=as_number(metrics.get("best_epoch")),
                       best_val_accuracy=as_number(best.get(accuracy_key(best, prefix="val_"))),
                       train_time_s=training_seconds(metrics))
            test = as_number(test.get(accuracy_key(test)))
            if test is not None:
                row.update(test_accuracy=test, test_accuracy_from=METRICS)
        except (RunError, AttributeError) as exc:
            problems.append(str(exc) if isinstance(exc, RunError) else f"{metrics_path}: unexpected contents")
    report = eval_paths(run_dir, "test").report
    if report.exists():
        try:
            test = as_number(read_json_object(report).get("accuracy"))
            if test is not None:
                row.update(test_accuracy=test, test_accuracy_from=f"{EVAL_DIR}/{report.name}")
        except RunError as exc:
            problems.append(str(exc))
    if status.state == COMPLETED and not (run_dir / MODEL).is_file():
        problems.append(f"{run_dir / MODEL} is missing")
    if problems:
        row.update(status=BROKEN, reason="; ".join(problems))
    return row


def training_seconds(metrics):
    """The run's `fit` with all its callbacks (metrics.json's fit_time_s); runs written before cnnlab recorded it
    have only wall_time_s, the sum of their epochs without the callbacks' work, which is the nearest there is."""
    return as_number(metrics.get("fit_time_s", metrics.get("wall_time_s")))


def read_config_name(path):
    try:
        data = load_yaml(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as exc:
        raise RunError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise RunError(f"{path}: has no name")
    return data["name"]


def read_json_object(path):
    data = read_json(path)
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def as_number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


RUNS_TABLE = ((Column("RUN"), "name"), (Column("CONFIG"), "config"), (Column("BACKEND"), "backend"), (Column("STATUS"), "status"),
              (Column("EPOCHS", RIGHT), "epochs"), (Column("BEST", RIGHT), "best_epoch"),
              (Column("BEST VAL ACC", RIGHT), "best_val_accuracy"), (Column("TEST ACC", RIGHT), "test_accuracy"),
              (Column("TRAIN TIME", RIGHT), "train_time_s"))


def format_runs_table(rows):
    """An aligned table, newest first as given, then one line per run whose status has a reason."""
    def cell(key, value):
        if value is None:
            return "-"
        if key.endswith("accuracy"):
            return f"{value:.4f}"
        if key == "train_time_s":
            return f"{value:.1f} s"
        return str(value)

    columns = [column for column, _ in RUNS_TABLE]
    lines = [format_table(columns, [[cell(key, row[key]) for _, key in RUNS_TABLE] for row in rows])]
    lines += [f"{row['name']}: {row['status']}: {row['reason']}" for row in rows if row["reason"]]
    return "\n".join(lines)


# ---------------------------------------------------------------- sweeps and comparisons (no TensorFlow)


def create_group_dir(runs_dir, kind, name):
    """A new, empty sweep or comparison folder `<kind>-<name>-<timestamp>/`; its plan file, written last, marks it."""
    return create_run_dir(runs_dir, f"{kind}-{name}")


def read_group_plan(folder, kind):
    """The plan of the sweep or comparison that --resume names; one line where the folder is not one of that kind."""
    noun = GROUP_NOUNS[kind]
    path = Path(folder) / GROUP_PLANS[kind]
    if not path.is_file():
        raise RunError(f"--resume {folder}: not a {noun} folder (no {path.name}); leave out --resume to start a new {noun}")
    plan = read_json(path)
    if not isinstance(plan, dict):
        raise RunError(f"{path}: not a {noun} plan (expected a JSON object); leave out --resume to start a new {noun}")
    return plan


def compare_initial_weights(compare_dir, seed):
    return Path(compare_dir) / COMPARE_INITIAL_WEIGHTS.format(seed=seed)


def find_groups(runs_dir):
    """Sweep and comparison folders directly under `runs_dir`, newest first, as (folder, kind)."""
    runs_dir = Path(runs_dir)
    found = []
    for path in runs_dir.iterdir() if runs_dir.is_dir() else ():
        kind = next((kind for kind, plan in GROUP_PLANS.items() if (path / plan).is_file()), None)
        if kind and not path.name.startswith("."):
            found.append((path, kind))
    return sorted(found, key=lambda item: (*started_at(item[0]), item[0].name), reverse=True)


def is_group(path):
    """A sweep or comparison folder (it holds runs; a sweep's config.yaml does not make it one)."""
    return any((Path(path) / plan).is_file() for plan in GROUP_PLANS.values())


def group_of(run_dir):
    """The sweep or comparison folder a run folder is in (a sweep's trials are in its trials/), or None."""
    parent = Path(run_dir).parent
    if parent.name == SWEEP_TRIALS_DIR and is_group(parent.parent):
        return parent.parent
    return parent if is_group(parent) else None


def runs_in_group(folder, kind):
    """The run folders a sweep or a comparison holds, newest first."""
    inside = Path(folder) / SWEEP_TRIALS_DIR if kind == "sweep" else Path(folder)
    return find_runs(inside) if inside.is_dir() else []


def summarize_group(folder, kind):
    """One row of `cnnlab runs`' second table: how many runs a sweep or comparison holds and its best."""
    folder = Path(folder)
    inner = [summarize_run(run_dir) for run_dir in runs_in_group(folder, kind)]
    row = {"name": folder.name, "kind": kind, "path": str(folder), "started": started_at(folder)[0].isoformat(),
           "runs": len(inner), "completed": sum(r["status"] == COMPLETED for r in inner), "metric": "val_accuracy",
           "best": None, "best_run": None}
    if kind == "sweep":
        row.update(best_of_sweep(folder))
    else:
        scored = [r for r in inner if r["best_val_accuracy"] is not None]
        if scored:
            top = max(scored, key=lambda r: r["best_val_accuracy"])
            row.update(best=top["best_val_accuracy"], best_run=top["name"])
    return row


def best_of_sweep(folder):
    """The best completed trial of a sweep, by its own metric and direction (from its config.yaml and trials.csv)."""
    try:
        section = (load_yaml((folder / CONFIG).read_text(encoding="utf-8")) or {}).get("sweep") or {}
        with open(folder / SWEEP_TRIALS_CSV, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if row.get("state") == "complete" and row.get("value")]
    except (OSError, yaml.YAMLError, ConfigError, AttributeError):
        return {}
    if not rows:
        return {"metric": section.get("metric", "value")}
    pick = max if section.get("direction") == "maximize" else min
    top = pick(rows, key=lambda row: float(row["value"]))
    return {"metric": section.get("metric", "value"), "best": float(top["value"]), "best_run": Path(top.get("run_dir") or "").name or None}


GROUPS_TABLE = ((Column("SWEEP OR COMPARISON"), "name"), (Column("KIND"), "kind"), (Column("RUNS", RIGHT), "runs"),
                (Column("COMPLETED", RIGHT), "completed"), (Column("BY"), "metric"), (Column("BEST", RIGHT), "best"),
                (Column("BEST RUN"), "best_run"))


def format_groups_table(rows):
    def cell(key, value):
        if value is None:
            return "-"
        return f"{value:.4f}" if key == "best" else str(value)

    return format_table([column for column, _ in GROUPS_TABLE], [[cell(key, row[key]) for _, key in GROUPS_TABLE] for row in rows])
