"""compare-optimizers' report: one row per optimizer (mean ± spread over seeds), its tables, summary.md and plots.

Reads only what each run folder recorded (metrics.json, history.csv), handed in as
outcomes, so the report of a resumed comparison is the same as that of one that
was never interrupted.
"""

import json
import math

from cnnlab.tracking import plots
from cnnlab.rundir import files as run_files
from cnnlab.config.schema import to_plain
from cnnlab.config.intervals import accuracy_cell, format_accuracy
from cnnlab.config.metric_names import accuracy_key
from cnnlab.tracking.tables import RIGHT, Column, csv_text, format_table, mean, mean_std, mean_std_cell, number_cell

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
VAL_ACCURACY_PLOT = "val_accuracy.png"
VAL_LOSS_PLOT = "val_loss.png"
TRAIN_LOSS_PLOT = "train_loss.png"
TARGET_FRACTION = 0.95  # "epochs to reach 95% of the best accuracy of all runs"
COMPLETED = run_files.COMPLETED


def progress_line(counter, outcome):
    head = f"{counter} {outcome.label} (seed {outcome.seed}):"
    folder = outcome.run_dir.name if outcome.run_dir else "no run folder"
    if outcome.state != COMPLETED:
        return f"{head} {outcome.state.upper()}: {outcome.reason} ({folder})"
    m = outcome.metrics
    accuracy = accuracy_key(m["best"], prefix="val_")
    best = m["best"]
    scores = [f"{accuracy} {format_accuracy(best[accuracy], m.get('num_val'))}"] if accuracy in best else []
    scores = ", ".join(scores + ([f"val_loss {best['val_loss']:.4f}"] if "val_loss" in best else []))
    stopped = f"{m['epochs_run']}/{m['epochs_planned']}"
    when = "completed earlier, kept" if outcome.skipped else f"{per_epoch(m):.2f} s/epoch"
    return f"{head} {scores} at epoch {m['best_epoch']}, stopped at {stopped}; {when} ({folder})"



def per_epoch(metrics):
    """Seconds of `fit` per epoch, callbacks included; a run kept from before fit_time_s was recorded: of its epochs alone."""
    seconds, epochs = ((metrics["fit_time_s"], metrics["fit_epochs"]) if "fit_time_s" in metrics
                       else (metrics["wall_time_s"], metrics["epochs_run"]))
    return seconds / epochs if epochs else float("nan")


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


def summary_table_columns(num_val=None, num_test=None):
    """The summary's columns; the accuracies' titles say how many images each run's was measured on, where all agree."""
    val, test = (f" (n={n})" if n else "" for n in (num_val, num_test))
    return (Column("#", RIGHT), Column("optimizer"), *(Column(title, RIGHT) for title in (
        "runs", f"best val acc{val}", "best val loss", "best epoch", "stopped at", f"test acc{test}", "epochs to 95%", "s/epoch")))


def held_out_counts(outcomes):
    """(num_val, num_test) shared by every completed run (one validation_split, so one size for every seed); None where they differ."""
    done = [o.metrics for o in outcomes if o.state == COMPLETED]

    def shared(key):
        values = {m.get(key) for m in done}
        return values.pop() if len(values) == 1 else None

    return shared("num_val"), shared("num_test")


RUNS_TABLE_COLUMNS = (Column("optimizer"), Column("seed", RIGHT), Column("status"),
              *(Column(title, RIGHT) for title in ("best epoch", "stopped at", "best val acc", "best val loss", "test acc")),
              Column("run folder"))


def summary_table(rows, repeats, epochs, counts=(None, None)):
    """The aligned Markdown table printed at the end and written to summary.md; `counts` from held_out_counts."""
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
    return format_table(summary_table_columns(*counts), body, markdown=True)


def runs_table(outcomes):
    """Every run of the comparison, with where it stopped and why it failed; its accuracies with their 95% intervals."""
    body = []
    for o in outcomes:
        if o.state != COMPLETED:
            body.append([o.label, str(o.seed), f"{o.state}: {o.reason}", "", "", "", "", "", o.run_dir.name if o.run_dir else "-"])
            continue
        m = o.metrics
        val_acc = accuracy_key(m["best"], "val_")
        test = (m["test"] or {}).get(val_acc[len("val_"):]) if val_acc else None
        body.append([o.label, str(o.seed), COMPLETED, str(m["best_epoch"]), f"{m['epochs_run']}/{m['epochs_planned']}",
                     accuracy_cell(m["best"].get(val_acc) if val_acc else None, m.get("num_val")),
                     number_cell(m["best"].get("val_loss"), 4), accuracy_cell(test, m.get("num_test")), o.run_dir.name])
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
        f"({', '.join(run_files.COMPARE_INITIAL_WEIGHTS.format(seed=s) for s in seeds)}) and saw the same data in the same order.",
        "",
        f"Best values are those at each run's best epoch (by {monitor}), as in its metrics.json"
        + ("; mean ± sample std over seeds." if len(seeds) > 1 else "."),
        ("Epochs to 95%: the first epoch whose val accuracy reached "
         f"{target:.4f}, 95% of the best val accuracy of all runs." if target is not None else "Epochs to 95%: no accuracy metric was logged."),
        "s/epoch: seconds of training per epoch, callbacks included (runs trained side by side with --jobs share the cores, so they are slower each).",
        *held_out_note(outcomes),
        "",
        table,
        "",
        "## Runs",
        "",
        runs_table(outcomes),
        "",
    ]
    return "\n".join(lines)


def held_out_note(outcomes):
    """How far apart two accuracies on n images can be by chance: one image's worth, and where each run's interval is."""
    num_val, _ = held_out_counts(outcomes)
    if not num_val:
        return []
    return [f"Val accuracies are measured on {num_val} images: one image is {100 / num_val:.2g} points. "
            "Each run's 95% interval (Wilson's) is in the Runs table; differences inside it may be luck."]


def write_report(compare_dir, config, specs, seeds, outcomes, plan):
    """summary.csv, summary.md and the three comparison plots. Returns (rows, table)."""
    rows, val_acc, target = summarize(specs, outcomes)
    table = summary_table(rows, len(seeds), config.train.epochs, held_out_counts(outcomes))
    run_files.write_text(compare_dir / SUMMARY_CSV, csv_text(SUMMARY_COLUMNS, rows))
    run_files.write_text(compare_dir / SUMMARY_MD, summary_markdown(config, seeds, outcomes, table, target, plan))
    write_plots(compare_dir, config.name, specs, outcomes, val_acc)
    return rows, table


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
        run_files.save_figure(fig, compare_dir / filename)
