"""`cnnlab sweep`: automated trial and error over any config value, with Optuna as the engine.

Optuna samples each trial's values from the config's `sweep:` space (cnnlab/search/space.py),
prunes hopeless trials from the value each epoch reports, and keeps the study in a
database (SQLite in the sweep folder by default, any URL Optuna supports otherwise, so
several processes or machines can join one study). cnnlab adds what makes a trial
usable afterwards: every trial is an ordinary run folder (evaluate, predict and
visualize work on it), and the sweep folder holds trials.csv, summary.md, best.yaml and
the plots a person wants.

This module runs the sweep and its trials; study.py holds the Optuna side (storage,
sampler, pruner), sweep_report.py the report, workers.py the worker processes.
"""

import math
import os
import shutil
import socket
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import yaml

from cnnlab.rundir import files as run_files
from cnnlab.search import space as spaces
from cnnlab.tracking import mlflow as tracking
from cnnlab.config.experiment import resolve_config
from cnnlab.config.schema import to_plain
from cnnlab.runtime.credentials import connect_url, storage_url
from cnnlab.errors import CnnlabError, ConfigError, RunError, TrainingInterrupted, format_traceback, most_common, one_line
from cnnlab.search.study import (FAILED, SURPLUS, claim_slot, count_finished, fail_killed_trials, failure_streak, import_optuna,
                          make_storage, open_study, redact, slot_holders, suggest)
from cnnlab.search.sweep_report import SUMMARY_MD, counted_on, format_value, short_value, write_report

SWEEP_PLAN = run_files.SWEEP_PLAN  # what the sweep is: storage, study name, where its trials' runs go
SWEEP_CONFIG = run_files.CONFIG  # the base config with its resolved sweep section, as the sweep started
STUDY_DB = "study.db"
TRIALS_DIR = run_files.SWEEP_TRIALS_DIR


def run_sweep(config, space, runs_dir, storage=None, study_name=None, resume_dir=None, jobs=1, progress=None,
              show_traceback=None):
    """Runs trials until `space.trials` have finished (completed or pruned), then writes the report.

    Whatever `cnnlab check` and `train` can know before a first trial (the config, its model,
    the data and its shape, the core budget) is checked before the sweep folder or its
    database is made. `jobs` > 1 runs that many worker processes on this machine, each
    started once with an equal share of the cores, all on the one study. A resumed sweep
    (`resume_dir`) reopens its own study and continues where it stopped; trials left running
    by a killed process of this machine are marked failed and not counted (other machines'
    by Optuna's heartbeat). Ctrl-C marks the running trials failed, writes the report of what
    finished and raises TrainingInterrupted with the command that resumes.

    After `space.max_failures` failed trials in a row, or when every trial of the study failed,
    the report is written and RunError names the reason most of them share. A failed trial's
    traceback is in its failure.txt; `show_traceback` (--debug) is also given each one.
    """
    import_optuna()
    progress = progress or (lambda line: None)
    check_before_training(config, space)
    if resume_dir is None:
        storage = storage_url(storage)  # --storage, else $CNNLAB_STORAGE, its password completed from the environment
    if storage is not None and resume_dir is None:
        make_storage(storage)  # an unreachable database stops here, before a sweep folder exists
        if study_name is not None:
            open_study({"storage": storage, "study": study_name}, space)  # and so does a study of another space
    sweep_dir, plan = open_sweep(config, space, runs_dir, storage, study_name, resume_dir)
    url = storage or connect_url(plan["storage"])  # sweep.json keeps no password: a resume finds it in the environment
    try:
        study = open_study(dict(plan, storage=url), space)
    except CnnlabError:
        if resume_dir is None:  # a study that cannot be joined leaves no sweep folder behind
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    fail_killed_trials(study)
    tracking.prepare_store(config, sweep_dir)
    finished_before = count_finished(study)
    first = len(study.get_trials(deepcopy=False))  # failures in a row are counted from here: a resume starts afresh
    progress(f"Sweep: {sweep_dir} ({plan['study']} in {redact(plan['storage'])}); "
             f"{finished_before} of {space.trials} trials finished" + (f"; {jobs} worker processes" if jobs > 1 else ""))
    try:
        if finished_before < space.trials:
            if jobs > 1:
                run_in_workers(sweep_dir, jobs, space.trials, first, progress, url, show_traceback)
            else:
                optimize(study, config, space, Path(plan["runs_dir"]), progress, first, show_traceback)
    except KeyboardInterrupt:
        write_report(sweep_dir, study, space, config)
        raise TrainingInterrupted(f"sweep interrupted after {count_finished(study)} of {space.trials} finished trials; "
                                  f"resume with: cnnlab sweep --resume {sweep_dir}") from None
    result = write_report(sweep_dir, study, space, config)
    check_ended_well(study, space, sweep_dir, first, result)
    return result


def check_before_training(config, space):
    """What would fail every trial alike, found before the sweep folder exists: the core budget, and everything
    `train` checks before its run folder (the config's model built and compiled, the data read, and the two fitted
    together), on the config's own values; under sweep.cv_folds, on the first fold's config, and whether the
    training pool has images enough for that many stratified folds."""
    from cnnlab.runtime import cores
    from cnnlab.training.job import prepare

    if space.cv_folds:
        from cnnlab.search.cv import check_before_folds

        check_before_folds(config, space.cv_folds)  # what `cnnlab cv` checks, the same function
        return
    cores.usable_cores()
    prepare(config)


def check_ended_well(study, space, sweep_dir, first, result):
    """RunError where the sweep stopped for its failures: too many in a row, or no trial that completed."""
    trials = study.get_trials(deepcopy=False)
    failed = [trial for trial in trials if is_failure(trial)]
    reason, count = most_common(trial.user_attrs.get("reason") for trial in failed)
    because = f"; {count} of {len(failed)} failed trials with: {reason}" if reason else ""
    report = sweep_dir / SUMMARY_MD
    streak = failure_streak(trials, first)
    if space.max_failures is not None and streak >= space.max_failures and result.finished < space.trials:
        raise RunError(f"the sweep in {sweep_dir} stopped after {streak} failed trials in a row "
                       f"(sweep.max_failures: {space.max_failures}; report in {report}){because}")
    if not result.best:
        raise RunError(f"every trial of the sweep in {sweep_dir} failed (report in {report}){because}")


def is_failure(trial):
    """A trial that failed for a reason of its own, which the report and the last line name."""
    return trial.state.name == "FAIL" and bool(trial.user_attrs.get(FAILED))


def optimize(study, config, space, trials_dir, progress, first=0, show_traceback=None):
    """This process's share of the study: trials until the study holds `space.trials` finished ones, or until
    `space.max_failures` trials in a row (from trial `first` on, whichever process ran them) have failed.

    Trials other processes are running count too: counting only finished ones, a worker that
    ended its trial while another's last one was still running started one more. A running
    trial that then fails does not count: the process that ran it goes on. Two processes that
    start a trial at the same instant are told apart by the trial's claim (study.claim_slot).
    """
    import optuna

    def done(study):
        if len(slot_holders(study)) >= space.trials:
            return True
        return space.max_failures is not None and failure_streak(study.get_trials(deepcopy=False), first) >= space.max_failures

    def stop_when_done(study, trial):
        if done(study):
            study.stop()

    if done(study):  # a study already done, or already failing, starts no trial here
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(Objective(config, space, trials_dir, progress, show_traceback), catch=(CnnlabError,),
                       callbacks=[stop_when_done])


def run_in_workers(sweep_dir, jobs, trials, first, progress, storage, show_traceback=None):
    """`jobs` worker processes (cnnlab/runtime/processes.py), each running `sweep_worker` on the sweep's own study.

    The storage URL goes with each job, through the worker's pipe: sweep.json holds it without its password.
    """
    from cnnlab.runtime.processes import Failure, Pool

    with Pool(jobs, run="cnnlab.search.sweep:sweep_worker") as pool:
        for index in range(jobs):
            pool.submit({"sweep_dir": str(sweep_dir), "worker": index + 1, "trials": trials, "first": first,
                         "storage": storage, "debug": show_traceback is not None})
        for job, result in pool.results():
            if isinstance(result, Failure):
                if result.interrupted:
                    raise KeyboardInterrupt
                progress(f"worker {job['worker']}: {result.reason}")
                if show_traceback is not None and result.traceback:
                    show_traceback(result.traceback)


def sweep_worker(job):
    """A worker process's body: the sweep's config, space and study from its folder, then trials until enough finished.

    Its progress lines, and under --debug the traceback of each trial that fails, go to its own stdout
    and stderr, which are the terminal's.
    """
    from cnnlab.config.experiment import load_config

    import_optuna()
    sweep_dir = Path(job["sweep_dir"])
    plan = dict(run_files.read_group_plan(sweep_dir, "sweep"), storage=job["storage"])
    config = load_config(sweep_dir / SWEEP_CONFIG)
    space = spaces.parse_space(to_plain(config.raw), trials=job["trials"])
    study = open_study(plan, space)

    def progress(line):
        print(f"[worker {job['worker']}] {line}", flush=True)

    def show_traceback(text):
        print(text.rstrip("\n"), file=sys.stderr, flush=True)

    optimize(study, config, space, Path(plan["runs_dir"]), progress, job.get("first", 0),
             show_traceback if job.get("debug") else None)
    return {"worker": job["worker"]}


# ---------------------------------------------------------------- the sweep folder and its study


def open_sweep(config, space, runs_dir, storage, study_name, resume_dir):
    """A new sweep folder with its plan, or the plan of the sweep being resumed."""
    if resume_dir is not None:
        return Path(resume_dir), run_files.read_group_plan(resume_dir, "sweep")
    sweep_dir = run_files.create_group_dir(runs_dir, "sweep", config.name)
    study_name = study_name or sweep_dir.name
    plan = {
        "name": config.name,
        "study": study_name,
        "storage": redact(storage) if storage else f"sqlite:///{(sweep_dir / STUDY_DB).resolve()}",
        "shared": storage is not None,
        "runs_dir": str((sweep_dir / TRIALS_DIR).resolve()),
        "trials": space.trials,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    raw = to_plain(config.raw)
    raw["sweep"] = sweep_section(space)  # with every --param and --trials, so that --resume needs nothing else
    run_files.write_text(sweep_dir / SWEEP_CONFIG, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    run_files.write_json(sweep_dir / SWEEP_PLAN, plan)
    return sweep_dir, plan


def sweep_section(space):
    """The space as a config's `sweep:` section."""
    params = {}
    for param in space.params:
        if param.kind == "choice":
            spec = {"choice": [to_plain(value) for value in param.choices]}
        else:
            spec = {param.kind: [param.low, param.high]}
            if param.step:
                spec["step"] = param.step
            if param.log:
                spec["log"] = True
        params[param.path] = spec
    return {"metric": space.metric, "direction": space.direction, "trials": space.trials, "sampler": space.sampler,
            "pruner": space.pruner, "seed": space.seed, "max_failures": space.max_failures, "cv_folds": space.cv_folds,
            "params": params}


# ---------------------------------------------------------------- one trial


class Objective:
    """Trains one trial's config into its own run folder and returns its best value of the sweep's metric.

    A trial that cannot train is failed with a one-line reason (trials.csv, summary.md, the
    progress line) and its traceback in failure.txt, in its run folder or, where training never
    made one, beside where it would be; nothing of it reaches the terminal but that progress
    line, and under --debug (`show_traceback`) the traceback.
    """

    def __init__(self, config, space, trials_dir, progress, show_traceback=None):
        self.config = config
        self.space = space
        self.trials_dir = Path(trials_dir)
        self.progress = progress
        self.show_traceback = show_traceback

    def __call__(self, trial):
        import optuna

        from cnnlab.training.train import train

        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        if not claim_slot(trial.study, trial.number, self.space.trials):
            trial.set_user_attr(SURPLUS, True)
            raise TrialSurplus(f"trial {trial.number} started when the sweep's {self.space.trials} trials were all taken")
        values = {param.path: suggest(trial, param) for param in self.space.params}
        name = f"{self.config.name}-trial{trial.number:03d}"
        started = time.perf_counter()
        try:
            trial_config = resolve_config(spaces.apply_values(to_plain(self.config.raw), values) | {"name": name})
        except ConfigError as exc:
            return self.failed(trial, name, f"the sampled config does not build: {exc}", exc)
        if self.space.cv_folds:
            return self.cross_validated(trial, trial_config, name, values, started)
        reporter = make_reporter(trial, self.space.metric)
        try:
            result = train(trial_config, self.trials_dir, verbose=0, extra_callbacks=[reporter])
        except TrainingInterrupted:
            self.record_run(trial, name)
            trial.set_user_attr("reason", "interrupted")
            raise KeyboardInterrupt from None
        except Exception as exc:  # a CnnlabError, or anything Keras raises outside fit: the sweep goes on
            run_dir = self.record_run(trial, name)
            status = run_files.read_status(run_dir) if run_dir is not None else None
            # the run's status says why without the run folder's path, so that trials failing alike read alike
            reason = status.reason if status is not None and status.state == run_files.FAILED and status.reason else str(exc)
            return self.failed(trial, name, reason, exc, run_dir)
        trial.set_user_attr("run_dir", str(Path(result.run_dir).resolve()))
        trial.set_user_attr("epochs", result.metrics["epochs_run"])
        trial.set_user_attr("num_val", result.metrics["num_val"])  # the n of a val accuracy's interval (sweep_report)
        history = run_files.read_history(Path(result.run_dir) / run_files.HISTORY)
        value = best_value(history, self.space.metric, self.space.direction)
        seconds = time.perf_counter() - started
        if value is None:  # a metric that is NaN in every epoch while the loss is not, say
            return self.failed(trial, name, f"sweep.metric {self.space.metric} has no finite value in any epoch", None,
                               Path(result.run_dir))
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", reporter.pruned_at)
            run_files.set_status(result.run_dir, run_files.COMPLETED, f"pruned by the sweep after epoch {reporter.pruned_at}")
            self.progress(f"trial {trial.number}: pruned after epoch {reporter.pruned_at} ({self.space.metric} {value:.4f}, "
                          f"{seconds:.1f} s) {short(values)}")
            raise optuna.TrialPruned()
        shown = format_value(self.space.metric, value, counted_on(self.space.metric, trial))
        self.progress(f"trial {trial.number}: {self.space.metric} {shown} in {result.metrics['epochs_run']} epochs "
                      f"({seconds:.1f} s) {short(values)}")
        return value

    def cross_validated(self, trial, trial_config, name, values, started):
        """`sweep.cv_folds: K`: the trial's config cross-validated (search/cv.py) into a cv folder of the trials folder;
        its value is each fold's best `sweep.metric` (the figure a one-split trial gives), averaged over the K folds
        weighted by their validation images: for an accuracy, the correct answers of every fold at its best epoch over
        the whole pool, a count with an interval. A trial with a failed fold fails: fewer folds would not be ranked on
        the same images. Trials are not pruned: a cross-validated trial reports once, after its last fold."""
        from cnnlab.search.cv import cross_validate

        try:
            cv = cross_validate(trial_config, self.space.cv_folds, self.trials_dir)
        except TrainingInterrupted:
            self.record_run(trial, name)
            trial.set_user_attr("reason", "interrupted")
            raise KeyboardInterrupt from None
        except Exception as exc:  # as a trained trial's: a CnnlabError or anything Keras raises, and the sweep goes on
            return self.failed(trial, name, str(exc), exc, self.record_run(trial, name))
        trial.set_user_attr("run_dir", str(cv.cv_dir.resolve()))
        failed = [row for row in cv.folds if row["state"] != run_files.COMPLETED]
        if failed:
            return self.failed(trial, name, f"fold {failed[0]['fold']} {failed[0]['state']}: {failed[0]['reason']}", None,
                               cv.cv_dir)
        bests = [best_value(run_files.read_history(Path(row["path"]) / run_files.HISTORY), self.space.metric, self.space.direction)
                 for row in cv.folds]
        if any(best is None for best in bests):
            return self.failed(trial, name, f"sweep.metric {self.space.metric} has no finite value in any epoch of a fold",
                               None, cv.cv_dir)
        pool = sum(row["num_val"] for row in cv.folds)
        value = sum(best * row["num_val"] for best, row in zip(bests, cv.folds)) / pool
        oof = cv.summary["out_of_fold"]
        trial.set_user_attr("epochs", "/".join(str(row["epochs"]) for row in cv.folds))
        trial.set_user_attr("num_val", pool)  # every image of the pool validates once: the n of the value's interval
        trial.set_user_attr("out_of_fold_accuracy", oof["accuracy"])
        shown = format_value(self.space.metric, value, counted_on(self.space.metric, trial))
        self.progress(f"trial {trial.number}: {self.space.metric} {shown} over {len(bests)} folds "
                      f"(out-of-fold accuracy {oof['correct']}/{oof['n']}) ({time.perf_counter() - started:.1f} s) {short(values)}")
        return value

    def record_run(self, trial, name):
        """The run folder `train` made for this trial (its cv folder under sweep.cv_folds), recorded in the study;
        None where it made none."""
        pattern = f"cv-{name}-*" if self.space.cv_folds else f"{name}-*"
        found = sorted(self.trials_dir.glob(pattern)) if self.trials_dir.is_dir() else []
        found = [path for path in found if path.is_dir()]
        if not found:
            return None
        trial.set_user_attr("run_dir", str(found[-1].resolve()))
        return found[-1]

    def failed(self, trial, name, reason, exc=None, run_dir=None):
        """A trial that cannot train is recorded as failed with its one-line reason; the sweep goes on."""
        reason = one_line(reason)
        trial.set_user_attr("reason", reason)
        trial.set_user_attr(FAILED, True)
        details = format_traceback(exc) if exc is not None else ""
        log = (run_dir / run_files.FAILURE_LOG) if run_dir is not None else self.trials_dir / f"{name}-{run_files.FAILURE_LOG}"
        try:
            # a trial that fails before any trial has trained (a model that cannot build, among --jobs 2) finds no
            # trials folder yet: train makes it with its first run folder
            log.parent.mkdir(parents=True, exist_ok=True)
            run_files.write_text(log, f"trial {trial.number} failed: {reason}\nvalues: {dict(trial.params)}\n\n{details}")
            trial.set_user_attr("failure_log", str(log.resolve()))
        except (RunError, OSError):
            pass  # the reason is in the study; a full disk must not stop the sweep from recording it
        self.progress(f"trial {trial.number}: failed: {reason}")
        if self.show_traceback is not None and details:
            self.show_traceback(details)
        raise TrialFailed(reason)


class TrialFailed(CnnlabError):
    """Raised inside the objective so that Optuna records the trial as failed and goes on."""


class TrialSurplus(CnnlabError):
    """Raised inside the objective of a trial that found every slot taken; it trains nothing and counts for nothing."""


def make_reporter(trial, metric):
    """A Keras callback that reports the metric to the trial after each epoch and stops training when Optuna prunes it."""
    import keras

    class ReportToTrial(keras.callbacks.Callback):
        pruned_at = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(metric)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), step=epoch)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return ReportToTrial()


def best_value(history, metric, direction):
    values = [v for v in history.get(metric, []) if v is not None and math.isfinite(v)]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def short(values):
    return "(" + ", ".join(f"{path.split('.')[-1]}={short_value(value)}" for path, value in values.items()) + ")"
