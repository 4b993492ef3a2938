"""A sweep's report, from its study as it is now: trials.csv, summary.md, best.yaml and Optuna's plots.

Written after every finished sweep and every interrupted one, so the folder always
says what the study holds; the study itself stays the record.
"""

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

from cnnlab.rundir import files as run_files
from cnnlab.config.intervals import accuracy_cell, format_accuracy
from cnnlab.config.metric_names import is_accuracy_name
from cnnlab.config.schema import to_plain
from cnnlab.errors import most_common
from cnnlab.tracking.tables import RIGHT, Column, format_table
from cnnlab.search.study import FAILED, SURPLUS, is_scalar, labels

TRIALS_CSV = run_files.SWEEP_TRIALS_CSV
SUMMARY_MD = "summary.md"
BEST_YAML = "best.yaml"


@dataclass(frozen=True)
class SweepResult:
    sweep_dir: Path
    finished: int  # completed + pruned trials
    failed: int
    best: dict  # {"number", "value", "metric", "params", "run_dir", "num_val"}, or {} when no trial completed
    table: str  # the top trials, aligned, for the terminal


def short_value(value):
    """A value for a table cell or a progress line: floats to 4 digits, YAML in flow style cut at 30 characters."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value) if is_scalar(value) else yaml.safe_dump(to_plain(value), default_flow_style=True).strip()
    return text if len(text) <= 30 else text[:27] + "..."


def counted_on(metric, trial):
    """The validation images a trial's value is a count over (a val accuracy: intervals apply); None for other metrics."""
    return trial.user_attrs.get("num_val") if is_accuracy_name(metric, "val_") else None


def write_best_config(run_dir, path, config):
    """best.yaml: the best trial's config.yaml; for a cross-validated trial (sweep.cv_folds), its cv folder's settings
    with the trial's name and the sweep's tracking, which is the config every fold trained but for its fold."""
    if (run_dir / run_files.CONFIG).is_file():
        run_files.copy_file(run_dir / run_files.CONFIG, path)
    elif (run_dir / run_files.CV_PLAN).is_file():
        plan = run_files.read_json(run_dir / run_files.CV_PLAN)
        raw = {"name": plan["name"], **plan["shared"], "tracking": to_plain(config.raw).get("tracking")}
        run_files.write_text(path, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def format_value(metric, value, num_val):
    """A trial's value for a line: an accuracy on few images with its count and 95% interval, anything else to 4 decimals."""
    return format_accuracy(value, num_val) if num_val else f"{value:.4f}"


def write_report(sweep_dir, study, space, config):
    """trials.csv, summary.md, best.yaml and the plots, from the study as it is now.

    Surplus trials (study.claim_slot: started when every slot was taken, never trained) are left out.
    """
    trials = [trial for trial in study.get_trials(deepcopy=False) if not trial.user_attrs.get(SURPLUS)]
    write_trials_csv(sweep_dir / TRIALS_CSV, trials, space)
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    best = {}
    if completed:
        top = study.best_trial
        best = {"number": top.number, "value": top.value, "metric": space.metric, "params": trial_values(top, space),
                "run_dir": top.user_attrs.get("run_dir"), "num_val": counted_on(space.metric, top)}
        write_best_config(Path(best["run_dir"] or ""), sweep_dir / BEST_YAML, config)
    importances = param_importances(study) if len(completed) >= 2 else {}
    columns, rows = top_trials(trials, space)
    table = format_table(columns, rows, markdown=True) if rows else "(no completed trial)"
    run_files.write_text(sweep_dir / SUMMARY_MD, summary_markdown(config, space, study, trials, best, importances, table))
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


TRIAL_COLUMNS = ("number", "state", "value", "epochs", "pruned_at_epoch", "seconds", "run_dir", "host", "reason", "failure_log")


def write_trials_csv(path, trials, space):
    columns = list(TRIAL_COLUMNS) + [param.path for param in space.params]
    with run_files.atomic_file(path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for trial in trials:
            row = {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                   "seconds": round(trial.duration.total_seconds(), 1) if trial.duration else None,
                   **{key: trial.user_attrs.get(key) for key in ("epochs", "pruned_at_epoch", "run_dir", "host", "reason", "failure_log")}}
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
    rows = [(str(t.number), t.state.name.lower(), accuracy_cell(t.value, counted_on(space.metric, t)), str(t.user_attrs.get("epochs", "-")),
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
        lines += [f"**Best: trial {best['number']}, {space.metric} {format_value(space.metric, best['value'], best['num_val'])}**, "
                  f"run folder `{best['run_dir']}`; "
                  f"its full config is `{BEST_YAML}` (`cnnlab train {BEST_YAML}` trains it again).", ""]
        lines += [f"- `{path}`: {short_value(value)}" for path, value in best["params"].items()] + [""]
    lines += ["## Top trials", "", table, ""]
    if importances:
        lines += ["## Parameter importances (Optuna's fANOVA)", ""]
        lines += [f"- `{path}`: {value:.3f}" for path, value in importances.items()] + [""]
    failed = [t for t in trials if t.state.name == "FAIL"]
    if failed:
        reason, count = most_common(t.user_attrs.get("reason") for t in failed if t.user_attrs.get(FAILED))
        lines += ["## Failed trials", ""]
        if reason:
            lines += [f"Most common reason ({count} of {len(failed)}): {reason}. Each trial's traceback is in the "
                      "failure.txt named in trials.csv.", ""]
        lines += [f"- trial {t.number}: {t.user_attrs.get('reason', 'no reason recorded (killed?)')}" for t in failed] + [""]
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
        figures[f"slice_{run_files.safe_file_part(param.path)}.png"] = lambda path=param.path: plots.plot_slice(study, params=[path])
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
            run_files.save_figure(figure, sweep_dir / name)
