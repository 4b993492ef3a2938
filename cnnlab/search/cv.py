"""`cnnlab cv`: stratified k-fold cross-validation, each fold an ordinary run, scored out of fold.

On a few hundred images one validation split is a noisy judge; k folds use every training image
for validation once. Fair across folds as a comparison is across optimizers: one seed, one set of
initial weights (`initial.weights.h5`, built once), the same settings; only the validation fold
differs (`train.fold: {index: i, of: K}` in each fold's config.yaml, so that evaluate and --resume
re-make its split). The test split, where the config holds one, stays out of every fold.

A cross-validation folder `cv-<name>-<timestamp>/` holds:
  cv.json                       the plan (settings, folds, the pool's size) and each fold's outcome; --resume reads it
  initial.weights.h5            the starting weights of every fold
  fold-<i>-<timestamp>/         one ordinary run folder per fold, with oof.csv: its best model's prediction of
                                each of its validation images, by position in the training pool
  summary.md, summary.csv, summary.json, confusion_matrix.png   per-fold figures, mean ± std, out-of-fold scores

The worker processes, the initial weights and the training of each run are compare-optimizers'
(group_runs.py); cv_report.py writes the summary.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.config.experiment import resolve_config
from cnnlab.config.schema import MAX_FOLDS, FoldConfig, to_plain
from cnnlab.data import sources as data
from cnnlab.errors import CnnlabError, ConfigError, RunError, TrainingInterrupted, format_traceback, most_common, one_line
from cnnlab.rundir import files as run_files
from cnnlab.runtime import cores, processes as workers
from cnnlab.search.cv_report import OOF_CSV, SUMMARY_MD, fold_row, progress_line, read_oof, write_report
from cnnlab.search.group_runs import check_resumable, ensure_initial_weights, plain_result, run_dirs_named, train_in_group
from cnnlab.tracking import mlflow as tracking

COMPLETED, FAILED, INTERRUPTED = run_files.COMPLETED, run_files.FAILED, run_files.INTERRUPTED
CV_INITIAL_WEIGHTS = "initial.weights.h5"


@dataclass(frozen=True)
class Job:
    """One fold: picklable, for worker processes."""

    index: int  # 1..of
    run_name: str
    config: Any  # ExperimentConfig with train.fold set
    cv_dir: Path
    initial_weights: Path
    positions: tuple  # the pool positions of the fold's validation images, in the order its val split holds them


@dataclass(frozen=True)
class CvResult:
    cv_dir: Path
    folds: list  # one row per fold (cv_report.fold_row), in fold order
    summary: dict  # summary.json: mean ± std, out-of-fold accuracy, interval and confusion matrix
    table: str  # summary.md as printed


def check_folds(folds):
    """K from 2 (one fold trains, one validates) up to MAX_FOLDS; a bad --folds is one line, not a usage screen."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
        raise ConfigError("--folds", f"expected an integer from 2 to {MAX_FOLDS}, received {folds!r}")


def fold_config(config, index, folds):
    """The experiment validating on fold `index` of `folds`, named `fold-<index>`, validated like any loaded config.

    A recipe's `train.final_fit` is set aside: a fold is scored by the best model on its own
    validation images, which a final fit would train on; the estimate is of that model.
    """
    raw = to_plain(config.raw)
    raw["name"] = f"fold-{index}"
    raw["train"]["fold"] = {"index": index, "of": folds}
    raw["train"]["final_fit"] = None
    return resolve_config(raw)


def shared_settings(config):
    """What every fold shares, as JSON data: the config less its name, tracking and fold."""
    raw = to_plain(config.raw)
    for key in ("name", "tracking"):
        raw.pop(key, None)
    raw["train"].pop("fold", None)
    return json.loads(json.dumps(raw))


def plan_jobs(config, folds, cv_dir, pool_labels):
    jobs = []
    for index in range(1, folds + 1):
        _, held = data.fold_positions(pool_labels, FoldConfig(index=index, of=folds), config.seed)
        jobs.append(Job(index=index, run_name=f"fold-{index}", config=fold_config(config, index, folds), cv_dir=cv_dir,
                        initial_weights=Path(cv_dir) / CV_INITIAL_WEIGHTS, positions=tuple(int(i) for i in held)))
    return jobs


def cross_validate(config, folds, runs_dir, jobs=1, resume_dir=None, progress=None, source=None, show_traceback=None):
    """Trains `config` once per fold of a stratified `folds`-fold split of its training pool and writes the summary.

    As a comparison does: a failed fold is recorded and the others go on (every fold failing is
    an error), Ctrl-C leaves a folder `resume_dir` finishes, `jobs` > 1 trains folds at once in
    worker processes, and `progress` receives one line per fold. Returns a CvResult.
    """
    from cnnlab.training.train import sigterm_as_interrupt

    progress = progress or (lambda line: None)
    pool_labels, description = check_before_folds(config, folds)
    cv_dir = open_cv(config, folds, resume_dir) if resume_dir else run_files.create_group_dir(runs_dir, "cv", config.name)
    jobs_list = plan_jobs(config, folds, cv_dir, pool_labels)
    plan = {"name": config.name, "config": None if source is None else str(source), "folds": folds, "seed": config.seed,
            "pool": len(pool_labels), "data": description, "shared": shared_settings(config)}
    ensure_initial_weights(jobs_list[0].config, Path(cv_dir) / CV_INITIAL_WEIGHTS)
    run_files.write_json(Path(cv_dir) / run_files.CV_PLAN, {**plan, "runs": []})
    tracking.prepare_store(config, cv_dir)

    done = {job.index: completed_fold(job) for job in jobs_list} if resume_dir else {}
    outcomes = {index: row for index, row in done.items() if row is not None}
    pending = [job for job in jobs_list if job.index not in outcomes]
    progress(f"Cross-validating {config.name}: {folds} folds of {len(pool_labels)} images in {cv_dir}: "
             f"{len(pending)} to train, {min(jobs, max(len(pending), 1))} at a time")
    for index in sorted(outcomes):
        progress(progress_line(index, folds, outcomes[index]))
    interrupted = False
    try:
        with sigterm_as_interrupt():
            for job, result in workers.run_jobs(pending, run_job, jobs, stop=lambda r: plain_result(r)["state"] == INTERRUPTED):
                result = plain_result(result)
                row = fold_row(job.index, job.positions, result["state"], result["run_dir"], result["reason"])
                outcomes[job.index] = row
                progress(progress_line(job.index, folds, row))
                if result.get("traceback") and show_traceback is not None:
                    show_traceback(result["traceback"])
                interrupted = interrupted or row["state"] == INTERRUPTED
    except KeyboardInterrupt:
        interrupted = True
    rows = [outcomes[job.index] for job in jobs_list if job.index in outcomes]
    summary, table = write_report(cv_dir, plan, rows, pool_labels, config)
    run_files.write_json(Path(cv_dir) / run_files.CV_PLAN, {**plan, "runs": [
        {key: row[key] for key in ("fold", "state", "run_dir", "reason")} for row in rows]})
    if interrupted or len(rows) < len(jobs_list):
        raise TrainingInterrupted(f"cross-validation interrupted; finish it by running the same command with --resume {cv_dir}")
    if not any(row["state"] == COMPLETED for row in rows):
        reason, count = most_common(row["reason"] for row in rows)
        because = f"; {count} of {len(rows)} with: {reason}" if reason else ""
        raise RunError(f"every fold of the cross-validation failed; see {Path(cv_dir) / SUMMARY_MD}{because}")
    return CvResult(cv_dir=Path(cv_dir), folds=rows, summary=summary, table=table)


def check_before_folds(config, folds):
    """What would fail every fold alike, found before any folder exists (by `cv` and by a cross-validated sweep): the
    folds asked for, the core budget, a pool with images enough for them, and whatever train would reject of the
    first fold's config. Returns the pool's labels and its description."""
    from cnnlab.training.job import prepare

    check_folds(folds)
    cores.usable_cores()
    _, pool_labels, description = data.training_pool(config.data, config.seed)
    data.fold_positions(pool_labels, FoldConfig(index=1, of=folds), config.seed)  # too few images: one line, no folder
    prepare(fold_config(config, 1, folds))
    return pool_labels, description


def open_cv(config, folds, resume_dir):
    """An existing cross-validation folder made with these settings and folds, else one line naming the difference."""
    cv_dir = Path(resume_dir)
    check_resumable(cv_dir, "cv", "cross-validation", shared_settings(config),
                    lambda stored: None if stored.get("folds") == folds else f"--folds {stored.get('folds')} there, {folds} here")
    return cv_dir


def completed_fold(job):
    """The newest completed run folder of the fold with its oof.csv, as a row; None where it has none (so it is redone)."""
    for run_dir in reversed(run_dirs_named(job.cv_dir, job.run_name)):
        if run_files.read_status(run_dir).state == COMPLETED and (run_dir / OOF_CSV).is_file():
            return fold_row(job.index, job.positions, COMPLETED, str(run_dir), "", skipped=True)
    return None


def run_job(job):
    """Trains one fold, then has its best model predict its validation images (oof.csv); plain data back, never raises."""
    result = train_in_group(job.config, job.cv_dir, job.run_name, job.initial_weights)
    if result["state"] != COMPLETED:
        return result
    try:
        write_oof(job, Path(result["run_dir"]))
    except CnnlabError as exc:
        result.update(state=FAILED, reason=one_line(exc), traceback=format_traceback(exc))
        run_files.set_status(result["run_dir"], FAILED, result["reason"])
    return result


def write_oof(job, run_dir):
    """The fold's validation images re-made from its own config.yaml (as evaluate would), predicted by best.keras."""
    from cnnlab.data.array_batches import make_dataset
    from cnnlab.data.preprocessing import preprocessing_from_record
    from cnnlab.deploy.inference import class_probabilities
    from cnnlab.rundir.held_out import load_split
    from cnnlab.rundir.trained import load_trained_run

    run = load_trained_run(run_dir)
    held = load_split(run, "val")
    if len(held.labels) != len(job.positions):
        raise RunError(f"{run_dir}: its validation split holds {len(held.labels)} images, fold {job.index} "
                       f"{len(job.positions)}; the data changed while the cross-validation ran")
    dataset = make_dataset(held.images, held.labels, preprocessing_from_record(run.preprocessing), run.config.train.batch_size)
    probabilities = class_probabilities(run.model.predict(dataset, verbose=0), len(run.class_names))
    predicted = np.argmax(probabilities, axis=1)
    lines = ["position,label,predicted,confidence"]
    lines += [f"{pos},{int(label)},{int(pred)},{float(probs[pred]):.6f}"
              for pos, label, pred, probs in zip(job.positions, held.labels, predicted, probabilities)]
    run_files.write_text(run_dir / OOF_CSV, "\n".join(lines) + "\n")
    return read_oof(run_dir)
