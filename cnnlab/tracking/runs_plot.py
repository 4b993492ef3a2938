"""`cnnlab runs --plot`: chosen runs' curves in one figure, best epochs marked, with the settings that differ between them.

Reads only a run's small files (history.csv, config.yaml), never Keras, so a figure of
finished runs appears at once and runs still training can be drawn beside them. A run is
named as `cnnlab runs --all` lists it (`compare-…/<run>`, `sweep-…/<name>-trial<NNN>-<timestamp>`) or by its path.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from cnnlab.rundir import files as run_files
from cnnlab.config.best_epoch import kept_epoch, monitor_of
from cnnlab.config.experiment import NOT_TRAINING
from cnnlab.errors import RunError
from cnnlab.config.keypaths import flatten
from cnnlab.tracking.tables import Column, format_table

DEFAULT_OUTPUT = "runs-plot.png"  # under --runs-dir, which is git-ignored
NOT_CURVES = ("epoch", "phase", "time_s", "learning_rate")  # history.csv's bookkeeping columns: no panel of their own
LEFT_OUT = ("name", *NOT_TRAINING)  # the run's name differs by construction; the others say nothing of how it trained
MISSING = object()  # a setting one run's config has and another's lacks
COLOURS = "tab10"


@dataclass(frozen=True)
class PlottedRun:
    label: str  # as `cnnlab runs --all` names it: the folder, or group/child inside a sweep or comparison
    path: Path
    history: dict  # history.csv as run_files.read_history gives it: {column: [values]}
    monitor: str  # the checkpoint's monitor, which chose the epoch best.keras holds
    best_epoch: object  # 1-based; None where the monitor was never logged
    settings: dict  # the run's config as {path: value} (paths.flatten)


@dataclass(frozen=True)
class PlotResult:
    output: Path
    runs: tuple
    metrics: tuple
    differing: list  # [(path, [value per run])]


def plot_runs(names, runs_dir, output=None):
    """Draws the named runs into one PNG (default <runs-dir>/runs-plot.png); every bad input is one RunError, before writing."""
    output = Path(output) if output is not None else Path(runs_dir) / DEFAULT_OUTPUT
    if output.suffix.lower() != ".png":
        raise RunError(f"--output {output}: expected a .png file name; the figure is written as PNG")
    paths = [find_run(name, runs_dir) for name in names]
    labels = [run_label(path) for path in paths]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise RunError(f"{names[i]}: {label} is named twice; name each run once")
    plotted = tuple(load_plotted_run(path, label) for path, label in zip(paths, labels))
    differing = differing_settings([run.settings for run in plotted]) if len(plotted) > 1 else []
    metrics = curve_names([run.history for run in plotted])
    run_files.save_figure(draw_runs(plotted, metrics, differing), output)
    return PlotResult(output, plotted, tuple(metrics), differing)


# ---------------------------------------------------------------- finding and loading runs


def find_run(name, runs_dir):
    """The run folder `name` means: a path, else a name under `runs_dir`, as `cnnlab runs --all` lists it."""
    for candidate in dict.fromkeys([Path(name), Path(runs_dir) / name]):
        if run_files.is_group(candidate):
            kind = next(kind for kind, plan in run_files.GROUP_PLANS.items() if (candidate / plan).is_file())
            raise RunError(f"{name}: a {run_files.GROUP_NOUNS[kind]} folder, not one run; name its runs as "
                           f"cnnlab runs --all lists them ({candidate.name}/RUN)")
        found = run_at(candidate)
        if found is not None:
            return found
    raise RunError(f"{name}: not a run folder, nor a run in {runs_dir}; cnnlab runs --all --runs-dir {runs_dir} lists them")


def run_at(path):
    """`path` if it is a run folder; a sweep's trial named `sweep-…/<trial folder>`, as the listing shortens it, inside trials/."""
    if run_files.is_run_dir(path):
        return path
    if path.parent.joinpath(run_files.SWEEP_PLAN).is_file():
        trial = path.parent / run_files.SWEEP_TRIALS_DIR / path.name
        if run_files.is_run_dir(trial):
            return trial
    return None


def run_label(run_dir):
    """The run's name in the legend and the table: its folder, or group/child for a run inside a sweep or comparison."""
    group = run_files.group_of(run_dir)
    return run_dir.name if group is None else f"{group.name}/{run_dir.name}"


def load_plotted_run(run_dir, label):
    """A run's curves, its best epoch by its own checkpoint monitor, and its settings, from its small files only."""
    from cnnlab.config.experiment import load_config
    from cnnlab.config.schema import to_plain

    history = read_curves(run_dir)
    config = load_config(run_dir / run_files.CONFIG)
    monitor, _ = monitor_of(config)
    return PlottedRun(label=label, path=run_dir, history=history, monitor=monitor,
                      best_epoch=kept_epoch(history, config), settings=flatten(to_plain(config.raw)))


def read_curves(run_dir):
    """history.csv as {column: [values]}; a run without a whole epoch in it yet is a RunError, so no empty panel is drawn."""
    path = run_dir / run_files.HISTORY
    if not path.is_file():
        status = run_files.read_status(run_dir).state
        raise RunError(f"{run_dir}: no {run_files.HISTORY} yet (status {status}); a run has curves once it has trained an epoch")
    try:
        history = run_files.read_history(path)
    except (ValueError, TypeError, AttributeError) as exc:  # a hand-edited or cut-off file: values that are not numbers
        raise RunError(f"cannot read {path}: {exc}") from exc
    if not history.get("epoch") or "loss" not in history:
        raise RunError(f"{path}: no epochs in it yet; a run has curves once it has trained an epoch")
    return history


def curve_names(histories):
    """The loss, then every compiled metric the runs logged (`accuracy` for `accuracy` or `val_accuracy`): one panel each."""
    names = {"loss": None}
    for history in histories:
        for column in history:
            name = column.removeprefix("val_")
            if name not in NOT_CURVES:
                names.setdefault(name, None)
    return list(names)


# ---------------------------------------------------------------- settings that differ


def differing_settings(settings):
    """[(path, [value per run])] for every config path whose value is not the same in all runs, in the configs' order.

    `settings` holds one flattened config per run (paths.flatten). A path one run lacks is
    MISSING there. The run's `name` and its `sweep` section are left out: they differ
    between a sweep's trials, or any two runs, without saying how the runs trained.
    """
    paths = dict.fromkeys(path for flat in settings for path in flat if top_key(path) not in LEFT_OUT)
    rows = [(path, [flat.get(path, MISSING) for flat in settings]) for path in paths]
    return [(path, values) for path, values in rows if any(value != values[0] for value in values[1:])]


def top_key(path):
    return path.split(".", 1)[0].split("[", 1)[0]


def setting_cell(value):
    """A value as YAML would show it (`null`, `true`, `[3, 3]`); `-` where the run's config lacks the setting."""
    if value is MISSING:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def format_settings_table(labels, differing):
    """The differing settings as an aligned text table, one column per run."""
    columns = [Column("SETTING")] + [Column(label) for label in labels]
    return format_table(columns, [[path] + [setting_cell(value) for value in values] for path, values in differing])


def format_result(result):
    """What `cnnlab runs --plot` prints: the file written, then the settings that differ (or why there are none)."""
    lines = [f"Wrote {result.output}: {len(result.runs)} run{'s' if len(result.runs) > 1 else ''}, "
             f"{and_list(result.metrics)} by epoch"]
    if len(result.runs) > 1 and result.differing:
        lines += ["", "Settings that differ:", format_settings_table([run.label for run in result.runs], result.differing)]
    elif len(result.runs) > 1:
        lines.append("The runs' settings are the same (their names, sweep and tracking sections aside).")
    return "\n".join(lines)


def and_list(names):
    """`loss`, `loss and accuracy`, `loss, accuracy and auc`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


# ---------------------------------------------------------------- the figure


def draw_runs(plotted, metrics, differing):
    """One panel per curve name, runs overlaid (validation solid, training dashed, best epoch a dot), the differing settings below."""
    from matplotlib.lines import Line2D

    from cnnlab.tracking.plots import plt

    table_height = 0.22 * (len(differing) + 1) + 0.3 if differing else 0
    labels = [run.label for run in plotted]
    width = max(6.4, 5.2 * len(metrics), table_width(labels, differing), 0.075 * sum(len(label) + 6 for label in labels[:3]))
    fig = plt.figure(figsize=(width, 4.4 + table_height), dpi=100, layout="constrained")
    panels_fig, table_fig = fig.subfigures(2, 1, height_ratios=[4.4, table_height or 0.01])
    axes = panels_fig.subplots(1, len(metrics), squeeze=False)[0]
    colours = plt.get_cmap(COLOURS)
    for i, run in enumerate(plotted):
        for ax, metric in zip(axes, metrics):
            draw_run(ax, run, metric, colours(i % colours.N))
    longest = max(max(run.history["epoch"]) for run in plotted)
    for ax, metric in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        if longest < 20:
            ax.set_xticks(range(1, longest + 1))
    handles = [Line2D([], [], color=colours(i % colours.N), label=run.label) for i, run in enumerate(plotted)]
    handles += [Line2D([], [], color="black", label="validation"), Line2D([], [], color="black", linestyle="--", label="training"),
                Line2D([], [], color="grey", marker="o", markeredgecolor="black", linestyle="none",
                       label="best epoch (by the run's checkpoint monitor)")]
    if any("phase" in run.history for run in plotted):
        handles.append(Line2D([], [], color="black", linestyle=":", label="fine-tuning starts"))
    panels_fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 3), fontsize=8)
    if differing:
        draw_settings_table(table_fig.subplots(), [run.label for run in plotted], differing)
    return fig


def draw_run(ax, run, metric, colour):
    """One run's training (dashed) and validation (solid) `metric`, its best epoch and fine-tuning's start."""
    epochs, history = run.history["epoch"], run.history
    if metric in history:
        ax.plot(epochs, history[metric], color=colour, linestyle="--", marker=".", linewidth=1.2)
    val = history.get(f"val_{metric}")
    if val is not None:
        ax.plot(epochs, val, color=colour, marker=".", linewidth=1.6)
        if run.best_epoch:
            ax.plot([epochs[run.best_epoch - 1]], [val[run.best_epoch - 1]], color=colour, marker="o", markersize=8,
                    markeredgecolor="black", linestyle="none", zorder=3)
    if 2 in history.get("phase", []):
        ax.axvline(epochs[history["phase"].index(2)] - 0.5, color=colour, linestyle=":", linewidth=1)


def table_width(labels, differing, inches_per_character=0.07):
    """Inches the settings table needs at font size 8, so that the figure is made wide enough to hold it whole."""
    if not differing:
        return 0
    columns = [[label] + [shorten(setting_cell(values[i])) for _, values in differing] for i, label in enumerate(labels)]
    characters = max(len(path) for path, _ in differing) + sum(max(len(cell) for cell in column) for column in columns)
    return inches_per_character * characters + 0.25 * (len(labels) + 1)


def draw_settings_table(ax, labels, differing):
    """The differing settings as a matplotlib table; long values shortened, as the printed table has them whole."""
    ax.axis("off")
    cells = [[path] + [shorten(setting_cell(value)) for value in values] for path, values in differing]
    table = ax.table(cellText=cells, colLabels=["setting"] + labels, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(range(len(labels) + 1))


def shorten(text, limit=40):
    """A cell short enough that a run's whole layer list cannot push the table off the figure."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
