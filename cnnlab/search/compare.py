"""`compare-optimizers`: train one config once per optimizer, fairly, and report which does best.

Fair means that, within one seed, every optimizer starts from the same initial weights
(built once, saved as `initial-s<seed>.weights.h5`, loaded by every run of that seed),
sees the same data split in the same order, and uses the same epochs, batch size,
callbacks and seed; only the optimizer and its own keyword arguments differ. Repeats use
the seeds `seed, seed + 1, ...`, so a repeat changes the initial weights, the
validation/test split, the shuffling order and dropout, for every optimizer alike.

A comparison folder `compare-<name>-<timestamp>/` holds:
  compare.json                      the plan (shared settings, optimizers, seeds) and each run's outcome; --resume reads it
  initial-s<seed>.weights.h5        the starting weights of every run with that seed
  <optimizer>-s<seed>-<timestamp>/  one ordinary run folder per optimizer x seed, plus a copy of its initial weights
  summary.csv, summary.md           one row per optimizer, best first
  val_accuracy.png, val_loss.png, train_loss.png   one curve per optimizer (mean, min-max band over seeds)

This module holds the plan and its running; optimizer_specs.py parses the candidates,
compare_report.py writes the report, group_runs.py trains each run (as it does a cross-validation's), and
runtime/processes.py runs the jobs, as it does a sweep's.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cnnlab.runtime import cores, processes as workers
from cnnlab.rundir import files as run_files
from cnnlab.tracking import mlflow as tracking
from cnnlab.search.compare_report import SUMMARY_MD, progress_line, write_report
from cnnlab.config.experiment import resolve_config
from cnnlab.config.schema import to_plain
from cnnlab.errors import RunError, TrainingInterrupted, most_common, one_line
from cnnlab.search.optimizer_specs import check_optimizer_specs
from cnnlab.search.group_runs import check_resumable, ensure_initial_weights, plain_result, run_dirs_named, train_in_group

COMPLETED, FAILED, INTERRUPTED = run_files.COMPLETED, run_files.FAILED, run_files.INTERRUPTED



@dataclass(frozen=True)
class Job:
    """One training of the comparison: an optimizer with a seed. Picklable, for worker processes."""

    label: str
    seed: int
    run_name: str
    config: Any  # ExperimentConfig named `run_name`, with this job's optimizer and seed
    compare_dir: Path
    initial_weights: Path


@dataclass(frozen=True)
class Outcome:
    """What became of one job; `metrics` and `history` are read back from its run folder when it completed."""

    label: str
    seed: int
    run_name: str
    state: str  # completed, failed or interrupted
    run_dir: Optional[Path]
    reason: str = ""
    metrics: Optional[dict] = None
    history: Optional[dict] = None
    skipped: bool = False  # completed by an earlier invocation, found by --resume


@dataclass(frozen=True)
class ComparisonResult:
    compare_dir: Path
    rows: list  # summary rows, best first, as written to summary.csv
    outcomes: list
    table: str  # the summary table as printed and as in summary.md


# ---------------------------------------------------------------- the plan


def job_config(config, spec, seed, run_name):
    """The experiment with this optimizer, seed and name, validated like any loaded config."""
    raw = to_plain(config.raw)
    raw["name"] = run_name
    raw["seed"] = seed
    raw["compile"]["optimizer"] = {"name": spec.name, **to_plain(spec.kwargs)}
    return resolve_config(raw)


def shared_settings(config):
    """What every run of a comparison shares: the config less its name, seed and optimizer, as JSON data.

    Where the runs are tracked (`tracking`) is no setting of their training, and comparisons made
    before that section existed must still resume.
    """
    raw = to_plain(config.raw)
    for key in ("name", "seed", "tracking"):
        raw.pop(key, None)
    raw["compile"].pop("optimizer", None)
    return json.loads(json.dumps(raw))


def seeds_for(config, repeats):
    return [config.seed + k for k in range(repeats)]


def run_name_for(spec, seed):
    return f"{spec.slug}-s{seed}"


def plan_jobs(config, specs, seeds, compare_dir):
    """Jobs ordered seed by seed, so the first results cover every optimizer once."""
    return [Job(label=spec.label, seed=seed, run_name=run_name_for(spec, seed),
                config=job_config(config, spec, seed, run_name_for(spec, seed)),
                compare_dir=compare_dir, initial_weights=run_files.compare_initial_weights(compare_dir, seed))
            for seed in seeds for spec in specs]


def check_before_training(config):
    """Everything `train` would reject about the config or its data, found before the comparison folder exists."""
    from cnnlab.training.job import prepare

    prepare(config)


# ---------------------------------------------------------------- running a comparison


def compare_optimizers(config, specs, runs_dir, repeats=1, jobs=1, resume_dir=None, progress=None, source=None,
                       show_traceback=None):
    """Trains `config` with each optimizer in `specs` for `repeats` seeds and writes the report.

    A run that fails (a NaN loss, a Keras error) is recorded, its traceback in its failure.txt
    (and given to `show_traceback`, --debug, where there is one), and the others go on; only
    when every run fails is that an error, naming the reason most of them share. With `resume_dir`, runs already completed there
    are kept and the rest are (re)done; the shared settings must be the ones it was made with.
    `jobs` > 1 trains that many runs at once in separate processes. `progress` receives one
    line per finished run. Returns a ComparisonResult.
    """
    from cnnlab.training.train import sigterm_as_interrupt

    progress = progress or (lambda line: None)
    cores.usable_cores()  # a bad CNNLAB_CORES is refused before the comparison folder exists
    check_optimizer_specs(specs)
    seeds = seeds_for(config, repeats)
    first = specs[0]
    check_before_training(job_config(config, first, seeds[0], run_name_for(first, seeds[0])))

    compare_dir = open_comparison(config, resume_dir) if resume_dir else run_files.create_group_dir(runs_dir, "compare", config.name)
    plan = plan_record(config, specs, seeds, source)
    jobs_list = plan_jobs(config, specs, seeds, compare_dir)
    for seed in seeds:
        ensure_initial_weights(job_config(config, first, seed, run_name_for(first, seed)), run_files.compare_initial_weights(compare_dir, seed))
    run_files.write_json(compare_dir / run_files.COMPARE_PLAN, {**plan, "runs": []})
    tracking.prepare_store(config, compare_dir)

    done = {job.run_name: completed_outcome(job) for job in jobs_list} if resume_dir else {}
    done = {name: outcome for name, outcome in done.items() if outcome is not None}
    pending = [job for job in jobs_list if job.run_name not in done]
    progress(f"Comparing {len(specs)} optimizer{'s' * (len(specs) != 1)} x {len(seeds)} seed{'s' * (len(seeds) != 1)} "
             f"in {compare_dir}: {len(pending)} run{'s' * (len(pending) != 1)} to train, {min(jobs, max(len(pending), 1))} at a time")
    counter = Counter(len(jobs_list))
    for job in jobs_list:
        if job.run_name in done:
            progress(progress_line(counter.next(), done[job.run_name]))

    outcomes = dict(done)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            for outcome, trace in run_jobs(pending, jobs):
                outcomes[outcome.run_name] = outcome
                progress(progress_line(counter.next(), outcome))
                if trace and show_traceback is not None:
                    show_traceback(trace)
                interrupted = interrupted or outcome.state == INTERRUPTED
    except KeyboardInterrupt:
        interrupted = True  # report what finished, then say how to finish the rest
    ordered = [outcomes[job.run_name] for job in jobs_list if job.run_name in outcomes]
    rows, table = write_report(compare_dir, config, specs, seeds, ordered, plan)
    run_files.write_json(compare_dir / run_files.COMPARE_PLAN, {**plan, "runs": [outcome_record(o) for o in ordered]})
    if interrupted or len(ordered) < len(jobs_list):
        raise TrainingInterrupted(f"comparison interrupted; finish it by running the same command with --resume {compare_dir}")
    if not any(o.state == COMPLETED for o in ordered):
        reason, count = most_common(o.reason for o in ordered)
        because = f"; {count} of {len(ordered)} with: {reason}" if reason else ""
        raise RunError(f"every run of the comparison failed; see {compare_dir / SUMMARY_MD}{because}")
    return ComparisonResult(compare_dir=compare_dir, rows=rows, outcomes=ordered, table=table)


class Counter:
    """`[k/n]` for progress lines."""

    def __init__(self, total):
        self.total = total
        self.count = 0

    def next(self):
        self.count += 1
        return f"[{self.count}/{self.total}]"


def plan_record(config, specs, seeds, source):
    return {
        "name": config.name,
        "config": None if source is None else str(source),
        "seeds": seeds,
        "optimizers": [{"label": s.label, "name": s.name, "kwargs": to_plain(s.kwargs)} for s in specs],
        "shared": shared_settings(config),
    }


def outcome_record(outcome):
    """One run's entry in compare.json: what --resume and a person need to find it again."""
    return {"optimizer": outcome.label, "seed": outcome.seed, "run_name": outcome.run_name, "state": outcome.state,
            "run_dir": outcome.run_dir.name if outcome.run_dir else None, "reason": outcome.reason}


def open_comparison(config, resume_dir):
    """An existing comparison folder whose runs share this config's settings, else an error naming the first difference."""
    compare_dir = Path(resume_dir)
    check_resumable(compare_dir, "compare", "comparison", shared_settings(config))
    return compare_dir






def completed_outcome(job):
    """The newest completed run folder of `job`, as an Outcome; None where it has none (so it is redone)."""
    for run_dir in reversed(run_dirs_named(job.compare_dir, job.run_name)):
        if run_files.read_status(run_dir).state == COMPLETED and (run_dir / run_files.METRICS).is_file():
            return load_outcome(job.label, job.seed, job.run_name, COMPLETED, run_dir, skipped=True)
    return None


def load_outcome(label, seed, run_name, state, run_dir, reason="", skipped=False):
    if state != COMPLETED:
        return Outcome(label, seed, run_name, state, run_dir, reason)
    metrics = run_files.read_json(run_dir / run_files.METRICS)
    history = run_files.read_history(run_dir / run_files.HISTORY)
    return Outcome(label, seed, run_name, state, run_dir, reason, metrics, history, skipped)


def run_jobs(jobs_list, jobs):
    """Yields (Outcome, traceback or "") per job as it finishes: in this process one after another, or in `jobs`
    worker processes.

    An interrupted run (Ctrl-C, or SIGTERM to a worker) starts no further one.
    """
    for job, result in workers.run_jobs(jobs_list, run_job, jobs, stop=lambda result: plain_result(result)["state"] == INTERRUPTED):
        yield outcome_of(job, result), plain_result(result).get("traceback", "")




def outcome_of(job, result):
    result = plain_result(result)
    run_dir = Path(result["run_dir"]) if result["run_dir"] else None
    try:
        return load_outcome(job.label, job.seed, job.run_name, result["state"], run_dir, result["reason"])
    except RunError as exc:
        return Outcome(job.label, job.seed, job.run_name, FAILED, run_dir, one_line(exc))


def run_job(job):
    """Trains one job (group_runs.train_in_group): plain data back, never an exception."""
    return train_in_group(job.config, job.compare_dir, job.run_name, job.initial_weights)
