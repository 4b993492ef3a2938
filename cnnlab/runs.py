"""The run folder: the only module that knows its file names, creates it, and writes into it.

Every write goes to a temporary file in the same folder, is flushed to disk and
renamed over the target, so a crash never leaves a half-written JSON or YAML.
"""

import csv
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnlab.errors import RunError

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
        raise RunError(f"cannot create the runs folder {runs_dir}: {exc.strerror or exc}") from None
    for n in range(1, 10_000):
        candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            candidate.mkdir()  # atomic: fails if another process made it first
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create a run folder in {runs_dir}: {exc.strerror or exc}") from None
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
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_text(path, text):
    with atomic_file(path) as f:
        f.write(text)


def write_history(path, rows):
    """history.csv: one row per completed epoch, 1-based like Keras' progress bar and `best_epoch`."""
    columns = ["epoch"] + sorted({key for row in rows for key in row if key != "epoch"})
    with atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_history(path):
    """history.csv as {column: [values]}, epochs as ints."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    columns = rows[0].keys() if rows else []
    return {key: [int(row[key]) if key == "epoch" else float(row[key]) for row in rows] for key in columns}


def save_figure(fig, path):
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")


def write_json(path, data):
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None


def set_status(run_dir, state, reason=""):
    """`status` holds the state on its first line and, for failures, the reason on the second."""
    write_text(Path(run_dir) / STATUS, f"{state}\n{reason}\n" if reason else f"{state}\n")


def read_status(run_dir):
    try:
        lines = (Path(run_dir) / STATUS).read_text(encoding="utf-8").splitlines()
    except OSError:
        return RunStatus("unknown", "no status file")
    return RunStatus(lines[0].strip() if lines else "unknown", lines[1].strip() if len(lines) > 1 else "")
