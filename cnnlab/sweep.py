"""`cnnlab sweep`: automated trial and error over any config value, with Optuna as the engine.

Optuna samples each trial's values from the config's `sweep:` space (cnnlab/space.py),
prunes hopeless trials from the value each epoch reports, and keeps the study in a
database (SQLite in the sweep folder by default, any URL Optuna supports otherwise, so
several processes or machines can join one study). cnnlab adds what makes a trial
usable afterwards: every trial is an ordinary run folder (evaluate, predict and
visualize work on it), and the sweep folder holds trials.csv, summary.md, best.yaml and
the plots a person wants.
"""

import csv
import math
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import yaml

from cnnlab import runs, space as spaces
from cnnlab.config import resolve_config, to_plain
from cnnlab.errors import CnnlabError, ConfigError, RunError, TrainingInterrupted, one_line
from cnnlab.paths import first_difference
from cnnlab.report import RIGHT, Column, format_table

SWEEP_PLAN = runs.SWEEP_PLAN  # what the sweep is: storage, study name, where its trials' runs go
SWEEP_CONFIG = runs.CONFIG  # the base config with its resolved sweep section, as the sweep started
STUDY_DB = "study.db"
TRIALS_DIR = runs.SWEEP_TRIALS_DIR
TRIALS_CSV = runs.SWEEP_TRIALS_CSV
SUMMARY_MD = "summary.md"
BEST_YAML = "best.yaml"
SCHEMA_ATTEMPTS = 3  # tries to open a database whose tables another process is creating
HEARTBEAT_S, GRACE_S = 10, 30  # a trial whose process stops beating for 30 s is marked failed by the next that looks


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    finished: int  # completed + pruned trials
    failed: int
    best: dict  # {"number", "value", "params", "run_dir"}, or {} when no trial completed
    table: str  # the top trials, aligned, for the terminal


def run_sweep(config, space, runs_dir, storage=None, study_name=None, resume_dir=None, jobs=1, progress=None):
    """Runs trials until `space.trials` have finished (completed or pruned), then writes the report.

    `jobs` > 1 runs that many worker processes on this machine, each started once with an
    equal share of the cores, all on the one study. A resumed sweep (`resume_dir`) reopens
    its own study and continues where it stopped; trials left running by a killed process
    of this machine are marked failed and not counted (other machines' by Optuna's
    heartbeat). Ctrl-C marks the running trials failed, writes the report of what finished
    and raises TrainingInterrupted with the command that resumes.
    """
    import_optuna()
    progress = progress or (lambda line: None)
    if storage is not None and resume_dir is None:
        make_storage(storage)  # an unreachable database stops here, before a sweep folder exists
        if study_name is not None:
            open_study({"storage": storage, "study": study_name}, space)  # and so does a study of another space
    sweep_dir, plan = open_sweep(config, space, runs_dir, storage, study_name, resume_dir)
    try:
        study = open_study(plan, space)
    except CnnlabError:
        if resume_dir is None:  # a study that cannot be joined leaves no sweep folder behind
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise
    fail_killed_trials(study)
    finished_before = count_finished(study)
    progress(f"Sweep: {sweep_dir} ({plan['study']} in {redact(plan['storage'])}); "
             f"{finished_before} of {space.trials} trials finished" + (f"; {jobs} worker processes" if jobs > 1 else ""))
    try:
        if finished_before < space.trials:
            if jobs > 1:
                run_in_workers(sweep_dir, jobs, space.trials, progress)
            else:
                optimize(study, config, space, Path(plan["runs_dir"]), progress)
    except KeyboardInterrupt:
        write_report(sweep_dir, study, space, config)
        raise TrainingInterrupted(f"sweep interrupted after {count_finished(study)} of {space.trials} finished trials; "
                                  f"resume with: cnnlab sweep --resume {sweep_dir}") from None
    result = write_report(sweep_dir, study, space, config)
    if not result.best:
        reasons = sorted({t.user_attrs.get("reason", "") for t in study.trials if t.state.name == "FAIL"} - {""})
        raise RunError(f"every trial of the sweep in {sweep_dir} failed: {'; '.join(reasons) or 'see trials.csv'}")
    return result


def optimize(study, config, space, trials_dir, progress):
    """This process's share of the study: trials until the study holds `space.trials` finished ones."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(Objective(config, space, trials_dir, progress), catch=(CnnlabError,), callbacks=[
            optuna.study.MaxTrialsCallback(space.trials, states=finished_states())])


def run_in_workers(sweep_dir, jobs, trials, progress):
    """`jobs` worker processes (cnnlab/workers.py), each running `sweep_worker` on the sweep's own study."""
    from cnnlab.workers import Failure, Pool

    with Pool(jobs, run="cnnlab.sweep:sweep_worker") as pool:
        for index in range(jobs):
            pool.submit({"sweep_dir": str(sweep_dir), "worker": index + 1, "trials": trials})
        for job, result in pool.results():
            if isinstance(result, Failure):
                if result.interrupted:
                    raise KeyboardInterrupt
                progress(f"worker {job['worker']}: {result.reason}")


def sweep_worker(job):
    """A worker process's body: the sweep's config, space and study from its folder, then trials until enough finished."""
    from cnnlab.config import load_config

    import_optuna()
    sweep_dir = Path(job["sweep_dir"])
    plan = runs.read_group_plan(sweep_dir, "sweep")
    config = load_config(sweep_dir / SWEEP_CONFIG)
    space = spaces.parse_space(to_plain(config.raw), trials=job["trials"])
    study = open_study(plan, space)

    def progress(line):
        print(f"[worker {job['worker']}] {line}", flush=True)

    optimize(study, config, space, Path(plan["runs_dir"]), progress)
    return {"worker": job["worker"]}


def fail_killed_trials(study):
    """Trials still marked running whose process on this machine is gone (SIGKILL, power loss) are marked failed.

    Optuna's heartbeat would do it too, but only once the grace period has passed and
    another trial starts; a resume right after a kill must not count them as running.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") == host and isinstance(pid, int) and not process_alive(pid):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise CnnlabError("cnnlab sweep needs Optuna: pip install optuna (it comes with pip install -e .)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def count_finished(study):
    """Completed and pruned trials: what `trials` counts."""
    return len(study.get_trials(deepcopy=False, states=finished_states()))


# ---------------------------------------------------------------- the sweep folder and its study


def open_sweep(config, space, runs_dir, storage, study_name, resume_dir):
    """A new sweep folder with its plan, or the plan of the sweep being resumed."""
    if resume_dir is not None:
        return Path(resume_dir), runs.read_group_plan(resume_dir, "sweep")
    sweep_dir = runs.create_group_dir(runs_dir, "sweep", config.name)
    study_name = study_name or sweep_dir.name
    plan = {
        "name": config.name,
        "study": study_name,
        "storage": storage or f"sqlite:///{(sweep_dir / STUDY_DB).resolve()}",
        "shared": storage is not None,
        "runs_dir": str((sweep_dir / TRIALS_DIR).resolve()),
        "trials": space.trials,
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    raw = to_plain(config.raw)
    raw["sweep"] = sweep_section(space)  # with every --param and --trials, so that --resume needs nothing else
    runs.write_text(sweep_dir / SWEEP_CONFIG, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    runs.write_json(sweep_dir / SWEEP_PLAN, plan)
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
            "pruner": space.pruner, "seed": space.seed, "params": params}


def open_study(plan, space):
    """The plan's study in its storage, created on first use; a study of that name with another space is refused."""
    import optuna

    storage = make_storage(plan["storage"])
    sampler = seeded_per_trial(space)
    pruner = make_pruner(space)
    direction = space.direction
    study = optuna.create_study(storage=storage, study_name=plan["study"], direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    recorded = study.user_attrs.get("space")
    mine = space_record(space)
    if recorded is None:
        study.set_user_attr("space", mine)
        with warnings.catch_warnings():  # experimental in Optuna 5: names the value in optuna-dashboard
            warnings.simplefilter("ignore")
            study.set_metric_names([space.metric])
        recorded = study.user_attrs.get("space")  # processes starting at once: the first write stays, Optuna drops the others
    difference = first_difference(recorded, mine)
    if difference is not None:
        raise ConfigError("sweep", f"the study {plan['study']!r} in {redact(plan['storage'])} was made with another search space "
                                   f"({'sweep.' + difference if difference else 'the whole space'} differs); "
                                   "give another --study name, or the same sweep section")
    return study


def make_storage(url):
    """Optuna's RDB storage with heartbeats, failing within seconds when the database cannot be reached."""
    import optuna
    import sqlalchemy.exc

    if url.startswith(("postgresql", "mysql")):
        engine_kwargs = {"connect_args": {"connect_timeout": 5}}
    else:  # SQLite: worker processes of one machine take turns writing; wait for the lock rather than fail
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeat_interval's ExperimentalWarning would be a second line before any error
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=GRACE_S)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # Processes that open an empty database at once race to create Optuna's tables, and PostgreSQL
            # refuses all but one (duplicate key ... pg_type_typname_nsp_index); the tables are there on the next try.
            if attempt < SCHEMA_ATTEMPTS:
                time.sleep(attempt)
                continue
            error = exc
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            error = exc
        raise CnnlabError(f"--storage {redact(url)}: cannot open the study database: {first_line(error)}") from None


def make_sampler(space):
    import optuna

    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.seed)
    if space.sampler == "grid":
        return optuna.samplers.GridSampler({param.path: grid_points(param) for param in space.params}, seed=space.seed)
    return optuna.samplers.TPESampler(seed=space.seed)


def seeded_per_trial(space):
    """Optuna's sampler of the space; random and TPE seeded afresh for each trial from (sweep.seed, trial number).

    One seed per process would make every process that joins the study (another machine,
    a --resume) draw the very values the first one drew; trial numbers are unique in a
    study, so each trial draws its own values, the same whichever process trains it.
    """
    # Not the grid: its seed shuffles the grid, whose point numbers every process must read alike, and it
    # already skips the points that other processes have run or are running.
    if space.sampler == "grid":
        return make_sampler(space)
    import numpy as np
    import optuna

    class SeededPerTrial(optuna.samplers.BaseSampler):
        def __init__(self):
            self.sampler = make_sampler(space)

        def before_trial(self, study, trial):
            seed = int(np.random.SeedSequence([space.seed, trial.number]).generate_state(1)[0])
            self.sampler = make_sampler(replace(space, seed=seed))
            self.sampler.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.sampler.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.sampler.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.sampler.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.sampler.after_trial(study, trial, state, values)

    return SeededPerTrial()


def make_pruner(space):
    import optuna

    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def space_record(space):
    """What must match for a second process to join a study: the parameters and the metric."""
    return {"metric": space.metric, "direction": space.direction,
            "params": {param.path: [param.kind, param.low, param.high, param.step, param.log, labels(param)] for param in space.params}}


def redact(url):
    """A storage URL without its password, for messages and files."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0] if lines else type(exc).__name__)


# ---------------------------------------------------------------- one trial


def labels(param):
    """Choices as Optuna can store them: scalars as they are, anything else as its YAML text."""
    if param.kind != "choice":
        return None
    return [value if is_scalar(value) else yaml.safe_dump(to_plain(value), default_flow_style=True).strip() for value in param.choices]


def grid_points(param):
    """The grid sampler's values of one parameter, choices by their labels."""
    return labels(param) if param.kind == "choice" else list(spaces.grid_values(param))


def is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def suggest(trial, param):
    """The trial's value for one parameter, sampled by Optuna, as the config takes it."""
    if param.kind == "int":
        return trial.suggest_int(param.path, param.low, param.high, step=param.step or 1, log=param.log)
    if param.kind == "float":
        value = trial.suggest_float(param.path, param.low, param.high, step=param.step, log=param.log)
        return round(value, 12) if param.step else value  # a step of 0.1 gives 0.30000000000000004 otherwise
    label = trial.suggest_categorical(param.path, labels(param))
    return param.choices[labels(param).index(label)]


class Objective:
    """Trains one trial's config into its own run folder and returns its best value of the sweep's metric."""

    def __init__(self, config, space, trials_dir, progress):
        self.config = config
        self.space = space
        self.trials_dir = Path(trials_dir)
        self.progress = progress

    def __call__(self, trial):
        import optuna

        from cnnlab.train import train

        values = {param.path: suggest(trial, param) for param in self.space.params}
        name = f"{self.config.name}-trial{trial.number:03d}"
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        started = time.perf_counter()
        try:
            trial_config = resolve_config(spaces.apply_values(to_plain(self.config.raw), values) | {"name": name})
        except ConfigError as exc:
            return self.failed(trial, f"the sampled config does not build: {exc}")
        reporter = make_reporter(trial, self.space.metric)
        try:
            result = train(trial_config, self.trials_dir, verbose=0, extra_callbacks=[reporter])
        except TrainingInterrupted:
            self.record_run(trial, name)
            trial.set_user_attr("reason", "interrupted")
            raise KeyboardInterrupt from None
        except CnnlabError as exc:
            self.record_run(trial, name)
            return self.failed(trial, str(exc))
        trial.set_user_attr("run_dir", str(Path(result.run_dir).resolve()))
        trial.set_user_attr("epochs", result.metrics["epochs_run"])
        history = runs.read_history(Path(result.run_dir) / runs.HISTORY)
        value = best_value(history, self.space.metric, self.space.direction)
        seconds = time.perf_counter() - started
        if value is None:  # a NaN loss from the first epoch on, say
            return self.failed(trial, f"sweep.metric {self.space.metric} has no finite value in {result.run_dir}")
        if reporter.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", reporter.pruned_at)
            runs.set_status(result.run_dir, runs.COMPLETED, f"pruned by the sweep after epoch {reporter.pruned_at}")
            self.progress(f"trial {trial.number}: pruned after epoch {reporter.pruned_at} ({self.space.metric} {value:.4f}, "
                          f"{seconds:.1f} s) {short(values)}")
            raise optuna.TrialPruned()
        self.progress(f"trial {trial.number}: {self.space.metric} {value:.4f} in {result.metrics['epochs_run']} epochs "
                      f"({seconds:.1f} s) {short(values)}")
        return value

    def record_run(self, trial, name):
        found = sorted(self.trials_dir.glob(f"{name}-*")) if self.trials_dir.is_dir() else []
        if found:
            trial.set_user_attr("run_dir", str(found[-1].resolve()))

    def failed(self, trial, reason):
        """A trial that cannot train is recorded as failed with its one-line reason; the sweep goes on."""
        trial.set_user_attr("reason", one_line(reason))
        self.progress(f"trial {trial.number}: failed: {one_line(reason)}")
        raise TrialFailed(reason)


class TrialFailed(CnnlabError):
    """Raised inside the objective so that Optuna records the trial as failed and goes on."""


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


def short_value(value):
    """A value for a table cell or a progress line: floats to 4 digits, YAML in flow style cut at 30 characters."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value) if is_scalar(value) else yaml.safe_dump(to_plain(value), default_flow_style=True).strip()
    return text if len(text) <= 30 else text[:27] + "..."


# ---------------------------------------------------------------- the report


def write_report(sweep_dir, study, space, config):
    """trials.csv, summary.md, best.yaml and the plots, from the study as it is now."""
    trials = study.get_trials(deepcopy=False)
    write_trials_csv(sweep_dir / TRIALS_CSV, trials, space)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    best = {}
    if completed:
        top = study.best_trial
        best = {"number": top.number, "value": top.value, "params": trial_values(top, space), "run_dir": top.user_attrs.get("run_dir")}
        run_config = Path(best["run_dir"] or "") / runs.CONFIG
        if run_config.is_file():
            runs.copy_file(run_config, sweep_dir / BEST_YAML)
    importances = param_importances(study) if len(completed) >= 2 else {}
    columns, rows = top_trials(trials, space)
    table = format_table(columns, rows, markdown=True) if rows else "(no completed trial)"
    runs.write_text(sweep_dir / SUMMARY_MD, summary_markdown(config, space, study, trials, best, importances, table))
    write_plots(sweep_dir, study, space, len(completed))
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    failed = sum(t.state.name == "FAIL" for t in trials)
    return SweepResult(sweep_dir=sweep_dir, finished=finished, failed=failed, best=best, table=format_table(columns, rows))


def trial_values(trial, space):
    """The config values a trial trained with (choices as their YAML values, not their labels)."""
    values = {}
    for param in space.params:
        if param.path not in trial.params:
            continue
        value = trial.params[param.path]
        values[param.path] = param.choices[labels(param).index(value)] if param.kind == "choice" else value
    return values


TRIAL_COLUMNS = ("number", "state", "value", "epochs", "pruned_at_epoch", "seconds", "run_dir", "host", "reason")


def write_trials_csv(path, trials, space):
    columns = list(TRIAL_COLUMNS) + [param.path for param in space.params]
    with runs.atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for trial in trials:
            row = {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                   "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
                   **{key: trial.user_attrs.get(key) for key in ("epochs", "pruned_at_epoch", "run_dir", "host", "reason")}}
            for param in space.params:
                if param.path in trial.params:
                    row[param.path] = trial.params[param.path]
            writer.writerow(row)


def top_trials(trials, space, limit=10):
    """(columns, rows) of the best completed trials, best first, then pruned ones, for the terminal and summary.md."""
    reverse = space.direction == "maximize"
    done = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value, reverse=reverse)
    columns = [Column("trial", RIGHT), Column("state"), Column(space.metric, RIGHT), Column("epochs", RIGHT)]
    columns += [Column(param.path) for param in space.params]
    rows = [(str(t.number), t.state.name.lower(), f"{t.value:.4f}", str(t.user_attrs.get("epochs", "-")),
             *[short_value(trial_values(t, space).get(param.path, "-")) for param in space.params]) for t in done[:limit]]
    return columns, rows


def param_importances(study):
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return {}


def summary_markdown(config, space, study, trials, best, importances, table):
    states = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    lines = [f"# Sweep of {config.name}", "",
             f"{space.trials} trials wanted, {space.direction} {space.metric}; sampler {space.sampler}, pruner {space.pruner}. "
             f"Trials so far: {', '.join(f'{n} {state}' for state, n in sorted(states.items())) or 'none'}.", ""]
    if best:
        lines += [f"**Best: trial {best['number']}, {space.metric} {best['value']:.4f}**, run folder `{best['run_dir']}`; "
                  f"its full config is `{BEST_YAML}` (`cnnlab train {BEST_YAML}` trains it again).", ""]
        lines += [f"- `{path}`: {short_value(value)}" for path, value in best["params"].items()] + [""]
    lines += ["## Top trials", "", table, ""]
    if importances:
        lines += ["## Parameter importances (Optuna's fANOVA)", ""]
        lines += [f"- `{path}`: {value:.3f}" for path, value in importances.items()] + [""]
    failed = [t for t in trials if t.state.name == "FAIL"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- trial {t.number}: {t.user_attrs.get('reason', 'no reason recorded (killed?)')}" for t in failed] + [""]
    return "\n".join(lines)


def write_plots(sweep_dir, study, space, completed):
    """Optuna's own matplotlib figures: history, importances, parallel coordinates, one slice per parameter."""
    if completed < 2:
        return
    import optuna.visualization.matplotlib as plots

    figures = {"optimization_history.png": lambda: plots.plot_optimization_history(study),
               "param_importances.png": lambda: plots.plot_param_importances(study),
               "parallel_coordinate.png": lambda: plots.plot_parallel_coordinate(study)}
    for param in space.params:
        figures[f"slice_{runs.safe_file_part(param.path)}.png"] = lambda path=param.path: plots.plot_slice(study, params=[path])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in figures.items():
            try:
                axes = draw()
            except (ValueError, RuntimeError):  # e.g. importances of a single-parameter space with equal values
                continue
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            runs.save_figure(figure, sweep_dir / name)
