"""The run folder's file names, its creation, and every write into it.

Every write goes to a temporary file in the same folder, is flushed to disk and
renamed over the target, so a crash never leaves a half-written JSON or YAML.
The only module that knows a run folder's file names: others ask it for them.
"""

import csv
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnlab.errors import RunError


CONFIG = "config.yaml"
SUMMARY = "model_summary.txt"
MODEL = "best.keras"
FINAL_MODEL = "final.keras"  # train.final_fit: retrained on training + validation; what evaluate, predict and export use
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
CV_PLAN = "cv.json"  # marks a cross-validation folder (cnnlab cv); its fold run folders are inside it
GROUP_PLANS = {"sweep": SWEEP_PLAN, "compare": COMPARE_PLAN, "cv": CV_PLAN}  # `<kind>-<name>-<timestamp>/` folders that hold runs
GROUP_NOUNS = {"sweep": "sweep", "compare": "comparison", "cv": "cross-validation"}

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


RUN_MARKERS = (STATUS, CONFIG, METRICS, MODEL)  # a folder holding none of these is not a run


def is_run_dir(path):
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


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


def is_group(path):
    """A sweep or comparison folder (it holds runs; a sweep's config.yaml does not make it one)."""
    return any((Path(path) / plan).is_file() for plan in GROUP_PLANS.values())


def group_of(run_dir):
    """The sweep or comparison folder a run folder is in (a sweep's trials are in its trials/), or None."""
    parent = Path(run_dir).parent
    if parent.name == SWEEP_TRIALS_DIR and is_group(parent.parent):
        return parent.parent
    return parent if is_group(parent) else None
