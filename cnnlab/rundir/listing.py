"""Listing runs, sweeps and comparisons for `cnnlab runs`, from their small files only (no TensorFlow)."""

import csv
import math
import re
from datetime import datetime
from pathlib import Path

import yaml

from cnnlab.config.metric_names import accuracy_key
from cnnlab.config.yaml_safety import load_yaml
from cnnlab.errors import ConfigError, RunError
from cnnlab.rundir.files import (COMPLETED, CONFIG, EVAL_DIR, GROUP_PLANS, METRICS, MODEL, SWEEP_TRIALS_CSV,
                                 SWEEP_TRIALS_DIR, eval_paths, is_group, is_run_dir, read_backend, read_json,
                                 read_status)


RUN_TIME = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")  # run_dir_name's timestamp and create_run_dir's counter
BROKEN = "broken"


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

    Test accuracy comes from eval/test.json when the run was evaluated, else from metrics.json; num_val and
    num_test are the images each accuracy was measured on, from the same file.
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    row = {"name": run_dir.name, "path": str(run_dir), "config": None, "backend": read_backend(run_dir, default=None),
           "status": status.state, "reason": status.reason or None,
           "started": started_at(run_dir)[0].isoformat(), "epochs": None, "best_epoch": None, "best_val_accuracy": None,
           "num_val": None, "test_accuracy": None, "test_accuracy_from": None, "num_test": None, "train_time_s": None}
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
                       num_val=as_count(metrics.get("num_val")), train_time_s=training_seconds(metrics))
            test = as_number(test.get(accuracy_key(test)))
            if test is not None:
                row.update(test_accuracy=test, test_accuracy_from=METRICS, num_test=as_count(metrics.get("num_test")))
        except (RunError, AttributeError) as exc:
            problems.append(str(exc) if isinstance(exc, RunError) else f"{metrics_path}: unexpected contents")
    report = eval_paths(run_dir, "test").report
    if report.exists():
        try:
            evaluation = read_json_object(report)
            test = as_number(evaluation.get("accuracy"))
            if test is not None:
                row.update(test_accuracy=test, test_accuracy_from=f"{EVAL_DIR}/{report.name}",
                           num_test=as_count(evaluation.get("num_images")))
        except RunError as exc:
            problems.append(str(exc))
    if status.state == COMPLETED and not (run_dir / MODEL).is_file():
        problems.append(f"{run_dir / MODEL} is missing")
    if problems:
        row.update(status=BROKEN, reason="; ".join(problems))
    return row


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


def as_count(value):
    """How many images an accuracy was measured on (so the table can give its interval); None where unknown or none."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def find_groups(runs_dir):
    """Sweep, comparison and cross-validation folders directly under `runs_dir`, newest first, as (folder, kind)."""
    runs_dir = Path(runs_dir)
    found = []
    for path in runs_dir.iterdir() if runs_dir.is_dir() else ():
        kind = next((kind for kind, plan in GROUP_PLANS.items() if (path / plan).is_file()), None)
        if kind and not path.name.startswith("."):
            found.append((path, kind))
    return sorted(found, key=lambda item: (*started_at(item[0]), item[0].name), reverse=True)


def runs_in_group(folder, kind):
    """The run folders a sweep, comparison or cross-validation holds, newest first; a cross-validated sweep's
    (sweep.cv_folds) are the fold runs of the cv folder each trial made, trial by trial."""
    inside = Path(folder) / SWEEP_TRIALS_DIR if kind == "sweep" else Path(folder)
    if not inside.is_dir():
        return []
    runs = find_runs(inside)
    if kind == "sweep":
        for trial, trial_kind in find_groups(inside):
            runs += runs_in_group(trial, trial_kind)
    return runs


def name_in_group(folder, run_dir):
    """`GROUP/RUN` as `runs --all` names a run inside a group (a sweep's trials/ left out); a cross-validated sweep's
    fold runs are `SWEEP/CV/FOLD`."""
    parts = Path(run_dir).relative_to(Path(folder).parent).parts
    return "/".join(part for index, part in enumerate(parts) if not (index == 1 and part == SWEEP_TRIALS_DIR))


def summarize_group(folder, kind):
    """One row of `cnnlab runs`' second table: how many runs a sweep or comparison holds and its best."""
    folder = Path(folder)
    inner = [summarize_run(run_dir) for run_dir in runs_in_group(folder, kind)]
    row = {"name": folder.name, "kind": kind, "path": str(folder), "started": started_at(folder)[0].isoformat(),
           "runs": len(inner), "completed": sum(r["status"] == COMPLETED for r in inner), "metric": "val_accuracy",
           "best": None, "best_n": None, "best_run": None}
    if kind == "sweep":
        row.update(best_of_sweep(folder))
    elif kind == "cv":
        row.update(out_of_fold_of(folder))
    else:
        scored = [r for r in inner if r["best_val_accuracy"] is not None]
        if scored:
            top = max(scored, key=lambda r: r["best_val_accuracy"])
            row.update(best=top["best_val_accuracy"], best_n=top["num_val"], best_run=top["name"])
    return row


def out_of_fold_of(folder):
    """A cross-validation's figure is its pooled out-of-fold accuracy (summary.json), not its best fold."""
    try:  # none yet while its first folds train
        oof = read_json_object(folder / "summary.json").get("out_of_fold")
    except RunError:
        oof = None
    accuracy = as_number(oof.get("accuracy")) if isinstance(oof, dict) else None
    n = as_count(oof.get("n")) if accuracy is not None else None
    return {"metric": "out_of_fold_accuracy", "best": accuracy, "best_n": n, "best_run": None}


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
    run_dir = Path(top["run_dir"]) if top.get("run_dir") else None
    return {"metric": section.get("metric", "value"), "best": float(top["value"]),
            "best_n": validated_on(run_dir) if run_dir is not None else None, "best_run": run_dir.name if run_dir else None}


def validated_on(trial_dir):
    """The images a sweep trial's value was measured on: its run's validation images, or, for a cross-validated
    trial, its cv folder's whole pool (every image validates once); None where its files say nothing."""
    if not (trial_dir / METRICS).is_file():
        return out_of_fold_of(trial_dir)["best_n"]
    try:
        return as_count(read_json_object(trial_dir / METRICS).get("num_val"))
    except RunError:
        return None


def training_seconds(metrics):
    """The run's `fit` with all its callbacks (metrics.json's fit_time_s); runs written before cnnlab recorded it
    have only wall_time_s, the sum of their epochs without the callbacks' work, which is the nearest there is."""
    return as_number(metrics.get("fit_time_s", metrics.get("wall_time_s")))
