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

Each candidate optimizer is fully described by its spec: Keras' defaults plus the
spec's own keyword arguments. The config's own `compile.optimizer` is not inherited.
"""

import hashlib
import json
import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from cnnlab import builder, cores, plots, runs, workers
from cnnlab.config import OptimizerConfig, resolve_config, short_repr, to_plain
from cnnlab.errors import CnnlabError, ConfigError, RunError, TrainingInterrupted, one_line
from cnnlab.metric_names import accuracy_key
from cnnlab.report import RIGHT, Column, csv_text, format_table, mean, mean_std, mean_std_cell, number_cell

PLAN = "compare.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
VAL_ACCURACY_PLOT = "val_accuracy.png"
VAL_LOSS_PLOT = "val_loss.png"
TRAIN_LOSS_PLOT = "train_loss.png"
RUN_INITIAL_WEIGHTS = "initial.weights.h5"  # the copy inside each run folder: what that run started from
COMPARE_PREFIX = "compare-"

DEFAULT_OPTIMIZERS = ("sgd", "sgd+momentum", "rmsprop", "adam", "adamw", "nadam", "adagrad")
# Named settings people ask for by name; a preset may take further keyword arguments after ':'.
PRESETS = {"sgd+momentum": ("sgd", {"momentum": 0.9})}
TARGET_FRACTION = 0.95  # "epochs to reach 95% of the best accuracy of all runs"
MAX_SLUG = 60  # run names must stay within config.NAME_PATTERN's 80 characters, with "-s<seed>" added
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
SPEC_SYNTAX = "NAME or NAME:KEY=VALUE,KEY=VALUE such as sgd:learning_rate=0.05,momentum=0.9"
COMPLETED, FAILED, INTERRUPTED = runs.COMPLETED, runs.FAILED, runs.INTERRUPTED


@dataclass(frozen=True)
class OptimizerSpec:
    """One candidate: `label` names it in tables, plots and folder names; `name` and `kwargs` build it."""

    label: str
    name: str
    kwargs: Mapping[str, Any]

    @property
    def slug(self):
        """The label as a folder-name part: `sgd+momentum` → `sgd-momentum`; long labels end in a hash of the label."""
        slug = SLUG_UNSAFE.sub("-", self.label).strip("-._") or "optimizer"
        if len(slug) > MAX_SLUG:
            slug = f"{slug[:MAX_SLUG - 9].rstrip('-._')}-{hashlib.sha1(self.label.encode()).hexdigest()[:8]}"
        return slug


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


# ---------------------------------------------------------------- optimizer specs


def parse_optimizer_specs(texts=()):
    """Specs from `-o` options, or the default set when there are none; the same label twice is an error."""
    specs = [parse_optimizer_spec(text) for text in (texts or DEFAULT_OPTIMIZERS)]
    seen = {}
    for spec in specs:
        if spec.label in seen:
            raise ConfigError(f"--optimizer {spec.label}", "is given twice; give each optimizer once")
        if spec.slug in seen.values():
            other = next(label for label, slug in seen.items() if slug == spec.slug)
            raise ConfigError(f"--optimizer {spec.label}", f"would share the run name {spec.slug} with {other}; write one of them differently")
        seen[spec.label] = spec.slug
    return tuple(specs)


def parse_optimizer_spec(text):
    """`adam`, `sgd+momentum` or `sgd:learning_rate=0.05,momentum=0.9` → OptimizerSpec.

    Values are read as YAML scalars, and as floats where YAML would keep a string
    (PyYAML reads `1e30` as text), so `learning_rate=1e-3` means 0.001; an integer
    learning rate is made a float, as Keras requires. Values cannot contain commas. The label is the text with spaces removed and the name lower-cased.
    """
    where = f"--optimizer {short_repr(text) if not isinstance(text, str) else text.strip()}"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(where, f"expected {SPEC_SYNTAX}")
    name, sep, args = "".join(text.split()).partition(":")
    name = name.lower()
    if not name:
        raise ConfigError(where, f"expected {SPEC_SYNTAX}")
    kwargs = {}
    parts = []
    for part in args.split(",") if sep else []:
        key, eq, value = part.partition("=")
        if not eq or not key.isidentifier() or not value:
            raise ConfigError(where, f"expected {SPEC_SYNTAX}; cannot read {part!r}")
        if key in kwargs:
            raise ConfigError(where, f"{key} is given twice")
        kwargs[key] = parse_value(value)
        if key == "learning_rate" and type(kwargs[key]) is int:
            kwargs[key] = float(kwargs[key])  # Keras refuses an int learning rate; `learning_rate=1` means 1.0
        parts.append(f"{key}={value}")
    label = name + (":" + ",".join(parts) if parts else "")
    if name in PRESETS:
        base_name, preset_kwargs = PRESETS[name]
        return OptimizerSpec(label=label, name=base_name, kwargs={**preset_kwargs, **kwargs})
    return OptimizerSpec(label=label, name=name, kwargs=kwargs)


def parse_value(text):
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_optimizer_specs(specs):
    """Builds every optimizer once, so a bad name or keyword is reported before any training starts."""
    for spec in specs:
        try:
            builder.make_optimizer(OptimizerConfig(name=spec.name, kwargs=dict(spec.kwargs)))
        except ConfigError as exc:
            key = exc.path[len("compile.optimizer."):] if exc.path and exc.path.startswith("compile.optimizer.") else ""
            key = "" if key == "name" else key
            presets = f", or the preset{'s' if len(PRESETS) > 1 else ''} {', '.join(PRESETS)}" if "Valid names" in exc.message else ""
            raise ConfigError(f"--optimizer {spec.label}", (f"{key}: " if key else "") + exc.message + presets) from None


# ---------------------------------------------------------------- the plan


def job_config(config, spec, seed, run_name):
    """The experiment with this optimizer, seed and name, validated like any loaded config."""
    raw = to_plain(config.raw)
    raw["name"] = run_name
    raw["seed"] = seed
    raw["compile"]["optimizer"] = {"name": spec.name, **to_plain(spec.kwargs)}
    return resolve_config(raw)


def shared_settings(config):
    """What every run of a comparison shares: the config less its name, seed and optimizer, as JSON data."""
    raw = to_plain(config.raw)
    for key in ("name", "seed"):
        raw.pop(key, None)
    raw["compile"].pop("optimizer", None)
    return json.loads(json.dumps(raw))


def seeds_for(config, repeats):
    return [config.seed + k for k in range(repeats)]


def run_name_for(spec, seed):
    return f"{spec.slug}-s{seed}"


def initial_weights_name(seed):
    return f"initial-s{seed}.weights.h5"


def plan_jobs(config, specs, seeds, compare_dir):
    """Jobs ordered seed by seed, so the first results cover every optimizer once."""
    return [Job(label=spec.label, seed=seed, run_name=run_name_for(spec, seed),
                config=job_config(config, spec, seed, run_name_for(spec, seed)),
                compare_dir=compare_dir, initial_weights=compare_dir / initial_weights_name(seed))
            for seed in seeds for spec in specs]


def check_before_training(config):
    """Everything `train` would reject about the config or its data, found before the comparison folder exists."""
    from cnnlab.train import prepare

    prepare(config)


# ---------------------------------------------------------------- running a comparison


def compare_optimizers(config, specs, runs_dir, repeats=1, jobs=1, resume_dir=None, progress=None, source=None):
    """Trains `config` with each optimizer in `specs` for `repeats` seeds and writes the report.

    A run that fails (a NaN loss, a Keras error) is recorded and the others go on; only
    when every run fails is that an error. With `resume_dir`, runs already completed there
    are kept and the rest are (re)done; the shared settings must be the ones it was made with.
    `jobs` > 1 trains that many runs at once in separate processes. `progress` receives one
    line per finished run. Returns a ComparisonResult.
    """
    from cnnlab.train import sigterm_as_interrupt

    progress = progress or (lambda line: None)
    cores.usable_cores()  # a bad CNNLAB_CORES is refused before the comparison folder exists
    check_optimizer_specs(specs)
    seeds = seeds_for(config, repeats)
    first = specs[0]
    check_before_training(job_config(config, first, seeds[0], run_name_for(first, seeds[0])))

    compare_dir = open_comparison(config, resume_dir) if resume_dir else runs.create_run_dir(runs_dir, COMPARE_PREFIX + config.name)
    plan = plan_record(config, specs, seeds, source)
    jobs_list = plan_jobs(config, specs, seeds, compare_dir)
    for seed in seeds:
        ensure_initial_weights(job_config(config, first, seed, run_name_for(first, seed)), compare_dir / initial_weights_name(seed))
    runs.write_json(compare_dir / PLAN, {**plan, "runs": []})

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
            for outcome in run_jobs(pending, jobs):
                outcomes[outcome.run_name] = outcome
                progress(progress_line(counter.next(), outcome))
                interrupted = interrupted or outcome.state == INTERRUPTED
    except KeyboardInterrupt:
        interrupted = True  # report what finished, then say how to finish the rest
    ordered = [outcomes[job.run_name] for job in jobs_list if job.run_name in outcomes]
    rows, table = write_report(compare_dir, config, specs, seeds, ordered, plan)
    if interrupted or len(ordered) < len(jobs_list):
        raise TrainingInterrupted(f"comparison interrupted; finish it by running the same command with --resume {compare_dir}")
    if not any(o.state == COMPLETED for o in ordered):
        raise RunError(f"every run of the comparison failed; see {compare_dir / SUMMARY_MD}")
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


def open_comparison(config, resume_dir):
    """An existing comparison folder whose runs share this config's settings, else an error naming the first difference."""
    compare_dir = Path(resume_dir)
    plan_path = compare_dir / PLAN
    if not plan_path.is_file():
        raise RunError(f"--resume {compare_dir}: not a comparison folder (no {PLAN}); leave out --resume to start a new comparison")
    stored = runs.read_json(plan_path)
    if not isinstance(stored, dict) or not isinstance(stored.get("shared"), dict):
        raise RunError(f"{plan_path}: not a comparison plan (no shared settings); leave out --resume to start a new comparison")
    difference = first_difference(stored["shared"], shared_settings(config))
    if difference is not None:
        raise RunError(f"--resume {compare_dir}: was made with different settings ({difference or 'the whole config'} differs); "
                       "leave out --resume to start a new comparison")
    return compare_dir


def first_difference(a, b, path=""):
    """The dotted path of the first difference between two JSON values, None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    return None if a == b else path


def ensure_initial_weights(config, path):
    """Builds the seeded model once and saves its weights; an existing file (on --resume) is kept as it is."""
    if path.exists():
        return
    import keras

    keras.utils.set_random_seed(config.seed)
    model = builder.build_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "initial.weights.h5"  # Keras insists on the .weights.h5 ending
        model.save_weights(saved)
        runs.copy_file(saved, path)


def run_dirs_named(compare_dir, run_name):
    """Run folders that `train` made for `run_name` (`<run_name>-YYYYmmdd-HHMMSS[-n]`), oldest first."""
    pattern = re.compile(rf"^{re.escape(run_name)}-(\d{{8}}-\d{{6}})(?:-(\d+))?$")
    found = []
    for path in Path(compare_dir).iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]


def completed_outcome(job):
    """The newest completed run folder of `job`, as an Outcome; None where it has none (so it is redone)."""
    for run_dir in reversed(run_dirs_named(job.compare_dir, job.run_name)):
        if runs.read_status(run_dir).state == COMPLETED and (run_dir / runs.METRICS).is_file():
            return load_outcome(job.label, job.seed, job.run_name, COMPLETED, run_dir, skipped=True)
    return None


def load_outcome(label, seed, run_name, state, run_dir, reason="", skipped=False):
    if state != COMPLETED:
        return Outcome(label, seed, run_name, state, run_dir, reason)
    metrics = runs.read_json(run_dir / runs.METRICS)
    history = runs.read_history(run_dir / runs.HISTORY)
    return Outcome(label, seed, run_name, state, run_dir, reason, metrics, history, skipped)


def run_jobs(jobs_list, jobs):
    """Yields an Outcome per job as it finishes: in this process one after another, or in `jobs` worker processes.

    An interrupted run (Ctrl-C, or SIGTERM to a worker) starts no further one.
    """
    for job, result in workers.run_jobs(jobs_list, run_job, jobs, stop=lambda result: plain_result(result)["state"] == INTERRUPTED):
        yield outcome_of(job, result)


def run_job(job):
    """Trains one job and returns {state, run_dir, reason}; never raises, so one failure cannot stop the others.

    Returns plain data: ConfigError cannot cross a process boundary (it does not unpickle).
    """
    from cnnlab.train import train

    before = set(run_dirs_named(job.compare_dir, job.run_name))
    run_dir, state, reason = None, COMPLETED, ""
    try:
        with warnings.catch_warnings():
            # the initial weights hold no optimizer state, by design: every optimizer starts fresh
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            run_dir = train(job.config, job.compare_dir, verbose=0, initial_weights=job.initial_weights).run_dir
    except (TrainingInterrupted, KeyboardInterrupt):
        state, reason = INTERRUPTED, "stopped by the user"
    except CnnlabError as exc:
        state, reason = FAILED, one_line(exc)
    except Exception as exc:  # anything Keras raises outside fit (train reports fit's own failures)
        state, reason = FAILED, builder.keras_message(exc)
    if run_dir is None:
        made = [path for path in run_dirs_named(job.compare_dir, job.run_name) if path not in before]
        run_dir = made[-1] if made else None
    if run_dir is not None:
        status = runs.read_status(run_dir)
        reason = status.reason or reason if state != COMPLETED else ""
        try:
            runs.copy_file(job.initial_weights, run_dir / RUN_INITIAL_WEIGHTS)
        except RunError as exc:
            if state == COMPLETED:
                state, reason = FAILED, one_line(exc)
    return {"state": state, "run_dir": None if run_dir is None else str(run_dir), "reason": reason}


def plain_result(result):
    """run_job's result, or the same for the Failure the pool hands back where its worker died."""
    if isinstance(result, workers.Failure):
        return {"state": INTERRUPTED if result.interrupted else FAILED, "run_dir": None, "reason": result.reason}
    return result


def outcome_of(job, result):
    result = plain_result(result)
    run_dir = Path(result["run_dir"]) if result["run_dir"] else None
    try:
        return load_outcome(job.label, job.seed, job.run_name, result["state"], run_dir, result["reason"])
    except RunError as exc:
        return Outcome(job.label, job.seed, job.run_name, FAILED, run_dir, one_line(exc))


def progress_line(counter, outcome):
    head = f"{counter} {outcome.label} (seed {outcome.seed}):"
    folder = outcome.run_dir.name if outcome.run_dir else "no run folder"
    if outcome.state != COMPLETED:
        return f"{head} {outcome.state.upper()}: {outcome.reason} ({folder})"
    m = outcome.metrics
    accuracy = accuracy_key(m["best"], prefix="val_")
    scores = ", ".join(f"{key} {m['best'][key]:.4f}" for key in (accuracy, "val_loss") if key and key in m["best"])
    stopped = f"{m['epochs_run']}/{m['epochs_planned']}"
    when = "completed earlier, kept" if outcome.skipped else f"{per_epoch(m):.2f} s/epoch"
    return f"{head} {scores} at epoch {m['best_epoch']}, stopped at {stopped}; {when} ({folder})"


# ---------------------------------------------------------------- the report


def per_epoch(metrics):
    return metrics["wall_time_s"] / metrics["epochs_run"] if metrics["epochs_run"] else float("nan")


def summarize(specs, outcomes):
    """One row per optimizer, best first: by mean best val accuracy (else mean best val loss); all-failed rows last.

    "Best" values are those at each run's best epoch, as its metrics.json records them.
    The 95% target is 95% of the highest best val accuracy of all completed runs; a run
    reaches it at the first epoch whose val accuracy is at least that.
    """
    completed = [o for o in outcomes if o.state == COMPLETED]
    val_acc = next((key for o in completed for key in [accuracy_key(o.metrics["best"], "val_")] if key), None)
    best_accuracies = [o.metrics["best"][val_acc] for o in completed if val_acc and val_acc in o.metrics["best"]]
    target = TARGET_FRACTION * max(best_accuracies) if best_accuracies else None
    rows = [summary_row(spec, [o for o in outcomes if o.label == spec.label], val_acc, target) for spec in specs]
    rows.sort(key=rank_key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank if row["runs_completed"] else None
    return rows, val_acc, target


def summary_row(spec, mine, val_acc, target):
    done = [o for o in mine if o.state == COMPLETED]
    failed = [o for o in mine if o.state != COMPLETED]
    test_acc = val_acc[len("val_"):] if val_acc else None
    reached = [epoch_reaching(o.history, val_acc, target) for o in done] if target is not None else []
    reached = [epoch for epoch in reached if epoch is not None]
    row = {
        "rank": None,
        "optimizer": spec.label,
        "optimizer_name": spec.name,
        "optimizer_kwargs": json.dumps(to_plain(spec.kwargs), sort_keys=True),
        "runs_completed": len(done),
        "runs_failed": len(failed),
    }
    row.update(mean_std("best_val_accuracy", [o.metrics["best"].get(val_acc) for o in done] if val_acc else []))
    row.update(mean_std("best_val_loss", [o.metrics["best"].get("val_loss") for o in done]))
    row["best_epoch_mean"] = mean([o.metrics["best_epoch"] for o in done])
    row["epochs_run_mean"] = mean([o.metrics["epochs_run"] for o in done])
    row.update(mean_std("test_accuracy", [(o.metrics["test"] or {}).get(test_acc) for o in done] if test_acc else []))
    row["epochs_to_95pct_mean"] = mean(reached)
    row["runs_reaching_95pct"] = len(reached) if target is not None and done else None
    row["wall_time_per_epoch_s_mean"] = mean([per_epoch(o.metrics) for o in done])
    row["failure"] = "; ".join(sorted({f"seed {o.seed}: {o.reason or o.state}" for o in failed}))
    return row


def rank_key(row):
    if not row["runs_completed"]:
        return (1, 0.0)
    if row["best_val_accuracy_mean"] is not None:
        return (0, -row["best_val_accuracy_mean"], row["best_val_loss_mean"] if row["best_val_loss_mean"] is not None else math.inf)
    return (0, row["best_val_loss_mean"] if row["best_val_loss_mean"] is not None else math.inf)


def epoch_reaching(history, key, target):
    for epoch, value in zip(history.get("epoch", []), history.get(key, [])):
        if value >= target:
            return epoch
    return None


SUMMARY_COLUMNS = ["rank", "optimizer", "optimizer_name", "optimizer_kwargs", "runs_completed", "runs_failed",
                   "best_val_accuracy_mean", "best_val_accuracy_std", "best_val_loss_mean", "best_val_loss_std",
                   "best_epoch_mean", "epochs_run_mean", "test_accuracy_mean", "test_accuracy_std",
                   "epochs_to_95pct_mean", "runs_reaching_95pct", "wall_time_per_epoch_s_mean", "failure"]


SUMMARY_TABLE_COLUMNS = (Column("#", RIGHT), Column("optimizer"), *(Column(title, RIGHT) for title in (
    "runs", "best val acc", "best val loss", "best epoch", "stopped at", "test acc", "epochs to 95%", "s/epoch")))
RUNS_TABLE_COLUMNS = (Column("optimizer"), Column("seed", RIGHT), Column("status"),
              *(Column(title, RIGHT) for title in ("best epoch", "stopped at", "best val acc", "best val loss", "test acc")),
              Column("run folder"))


def summary_table(rows, repeats, epochs):
    """The aligned Markdown table printed at the end and written to summary.md."""
    body = []
    for row in rows:
        runs_cell = f"{row['runs_completed']}/{row['runs_completed'] + row['runs_failed']}"
        if not row["runs_completed"]:
            body.append(["-", row["optimizer"], runs_cell, "failed", "", "", "", "", "", ""])
            continue
        reach = number_cell(row["epochs_to_95pct_mean"], 0 if repeats == 1 else 1)
        if row["runs_reaching_95pct"] is not None and row["runs_reaching_95pct"] < row["runs_completed"]:
            reach = f"{reach} ({row['runs_reaching_95pct']}/{row['runs_completed']} reached)" if row["runs_reaching_95pct"] else "never"
        body.append([str(row["rank"]), row["optimizer"], runs_cell,
                     mean_std_cell(row, "best_val_accuracy"), mean_std_cell(row, "best_val_loss"),
                     number_cell(row["best_epoch_mean"], 0 if repeats == 1 else 1), f"{number_cell(row['epochs_run_mean'], 0 if repeats == 1 else 1)}/{epochs}",
                     mean_std_cell(row, "test_accuracy"), reach, number_cell(row["wall_time_per_epoch_s_mean"], 2)])
    return format_table(SUMMARY_TABLE_COLUMNS, body, markdown=True)


def runs_table(outcomes):
    """Every run of the comparison, with where it stopped and why it failed."""
    body = []
    for o in outcomes:
        if o.state != COMPLETED:
            body.append([o.label, str(o.seed), f"{o.state}: {o.reason}", "", "", "", "", "", o.run_dir.name if o.run_dir else "-"])
            continue
        m = o.metrics
        val_acc = accuracy_key(m["best"], "val_")
        test = (m["test"] or {}).get(val_acc[len("val_"):]) if val_acc else None
        body.append([o.label, str(o.seed), COMPLETED, str(m["best_epoch"]), f"{m['epochs_run']}/{m['epochs_planned']}",
                     number_cell(m["best"].get(val_acc) if val_acc else None, 4), number_cell(m["best"].get("val_loss"), 4), number_cell(test, 4), o.run_dir.name])
    return format_table(RUNS_TABLE_COLUMNS, body, markdown=True)


def summary_markdown(config, seeds, outcomes, table, target, plan):
    cbs = config.train.callbacks
    stopping = (f"early stopping on {cbs['early_stopping'].get('monitor', 'val_loss')}, patience {cbs['early_stopping'].get('patience', 0)}"
                if cbs["early_stopping"] is not None else "no early stopping")
    monitor = cbs["checkpoint"].get("monitor", "val_loss")
    lines = [
        f"# Optimizer comparison: {config.name}",
        "",
        f"Config: {plan['config'] or config.name}; up to {config.train.epochs} epoch{'s' * (config.train.epochs != 1)} ({stopping}), batch size {config.train.batch_size}, "
        f"seeds {', '.join(map(str, seeds))}.",
        "Within a seed every optimizer started from the same initial weights "
        f"({', '.join(initial_weights_name(s) for s in seeds)}) and saw the same data in the same order.",
        "",
        f"Best values are those at each run's best epoch (by {monitor}), as in its metrics.json"
        + ("; mean ± sample std over seeds." if len(seeds) > 1 else "."),
        ("Epochs to 95%: the first epoch whose val accuracy reached "
         f"{target:.4f}, 95% of the best val accuracy of all runs." if target is not None else "Epochs to 95%: no accuracy metric was logged."),
        "s/epoch: wall time per epoch (runs trained side by side with --jobs share the cores, so they are slower each).",
        "",
        table,
        "",
        "## Runs",
        "",
        runs_table(outcomes),
        "",
    ]
    return "\n".join(lines)


def write_report(compare_dir, config, specs, seeds, outcomes, plan):
    """summary.csv, summary.md, the three comparison plots and the outcomes in compare.json. Returns (rows, table)."""
    rows, val_acc, target = summarize(specs, outcomes)
    table = summary_table(rows, len(seeds), config.train.epochs)
    runs.write_text(compare_dir / SUMMARY_CSV, csv_text(SUMMARY_COLUMNS, rows))
    runs.write_text(compare_dir / SUMMARY_MD, summary_markdown(config, seeds, outcomes, table, target, plan))
    write_plots(compare_dir, config.name, specs, outcomes, val_acc)
    runs.write_json(compare_dir / PLAN, {**plan, "runs": [outcome_record(o) for o in outcomes]})
    return rows, table


def outcome_record(outcome):
    return {"optimizer": outcome.label, "seed": outcome.seed, "run_name": outcome.run_name, "state": outcome.state,
            "run_dir": outcome.run_dir.name if outcome.run_dir else None, "reason": outcome.reason}


def write_plots(compare_dir, name, specs, outcomes, val_acc):
    """One curve per optimizer from its completed runs; failed runs are left out (their values may be NaN)."""
    wanted = [(val_acc, VAL_ACCURACY_PLOT, "validation accuracy"), ("val_loss", VAL_LOSS_PLOT, "validation loss"),
              ("loss", TRAIN_LOSS_PLOT, "training loss")]
    for key, filename, what in wanted:
        curves = {spec.label: [o.history[key] for o in outcomes if o.label == spec.label and o.state == COMPLETED and key in (o.history or {})]
                  for spec in specs} if key else {}
        failed = [label for label, values in curves.items() if not values]
        curves = {label: values for label, values in curves.items() if values}
        if not curves:
            continue
        fig = plots.plot_comparison(curves, ylabel=what, title=f"{name}: {what} by optimizer", missing=failed)
        runs.save_figure(fig, compare_dir / filename)
