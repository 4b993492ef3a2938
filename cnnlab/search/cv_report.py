"""A cross-validation's report: one row per fold, mean ± std over folds, and the out-of-fold score.

The mean of the folds' accuracies weighs each fold alike; the out-of-fold accuracy pools every
prediction (correct / pool size, each training image scored once by the one model that did not
train on it), so its Wilson interval is over the whole pool: the figure to quote on a small set.
"""

import csv
from pathlib import Path

import numpy as np

from cnnlab.config.intervals import accuracy_cell, wilson_interval
from cnnlab.rundir import files as run_files
from cnnlab.tracking import plots
from cnnlab.tracking.tables import RIGHT, Column, csv_text, format_table, mean_std, mean_std_cell

OOF_CSV = "oof.csv"  # in each fold's run folder: position in the pool, label, prediction, confidence
SUMMARY_MD, SUMMARY_CSV, SUMMARY_JSON = "summary.md", "summary.csv", "summary.json"
CONFUSION_PNG = "confusion_matrix.png"
CSV_COLUMNS = ("fold", "state", "epochs", "best_epoch", "val_loss", "val_accuracy", "num_val", "oof_correct", "run_dir", "reason")


def read_oof(run_dir):
    """oof.csv as int arrays {position, label, predicted}."""
    with open(Path(run_dir) / OOF_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([int(row[key]) for row in rows], dtype=np.int64) for key in ("position", "label", "predicted")}


def fold_row(index, positions, state, run_dir, reason, skipped=False):
    """One fold as the report shows it; a completed fold's figures read back from its metrics.json and oof.csv."""
    row = {"fold": index, "state": state, "run_dir": Path(run_dir).name if run_dir else None, "reason": reason,
           "skipped": skipped, "epochs": None, "best_epoch": None, "val_loss": None, "val_accuracy": None,
           "num_val": len(positions), "oof_correct": None, "path": run_dir}
    if state != run_files.COMPLETED:
        return row
    metrics = run_files.read_json(Path(run_dir) / run_files.METRICS)
    oof = read_oof(run_dir)
    row.update(epochs=metrics.get("epochs_run"), best_epoch=metrics.get("best_epoch"),
               val_loss=(metrics.get("best") or {}).get("val_loss"), val_accuracy=(metrics.get("best") or {}).get("val_accuracy"),
               oof_correct=int((oof["label"] == oof["predicted"]).sum()))
    return row


def progress_line(index, folds, row):
    done = " (done before)" if row.get("skipped") else ""
    if row["state"] != run_files.COMPLETED:
        return f"[{index}/{folds}] fold {index}: {row['state']}: {row['reason']}"
    return (f"[{index}/{folds}] fold {index}: val_accuracy {accuracy_cell(row['val_accuracy'], row['num_val'])}, "
            f"out-of-fold {row['oof_correct']}/{row['num_val']}: {row['run_dir']}{done}")


def out_of_fold(rows, num_classes):
    """Pooled over the completed folds: {n, correct, accuracy, low, high, confusion counts [true][predicted]}."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for row in rows:
        if row["state"] == run_files.COMPLETED:
            oof = read_oof(row["path"])
            np.add.at(counts, (oof["label"], oof["predicted"]), 1)
    n, correct = int(counts.sum()), int(np.trace(counts))
    if n == 0:
        return {"n": 0, "correct": 0, "accuracy": None, "low": None, "high": None, "counts": counts.tolist()}
    low, high = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n, "low": low, "high": high, "counts": counts.tolist()}


def class_names_of(rows, config):
    for row in rows:
        if row["state"] == run_files.COMPLETED:
            return list(run_files.read_json(Path(row["path"]) / run_files.CLASS_NAMES))
    units = config.model.layers[-1].kwargs.get("units")
    return [str(i) for i in range(units if isinstance(units, int) else 0)]


def write_report(cv_dir, plan, rows, pool_labels, config):
    """Writes summary.json, summary.csv, summary.md and the out-of-fold confusion matrix; returns (summary, table)."""
    cv_dir = Path(cv_dir)
    class_names = class_names_of(rows, config)
    completed = [row for row in rows if row["state"] == run_files.COMPLETED]
    oof = out_of_fold(rows, len(class_names))
    summary = {"name": plan["name"], "folds": plan["folds"], "seed": plan["seed"], "pool": len(pool_labels),
               "completed": len(completed),
               **mean_std("val_accuracy", [row["val_accuracy"] for row in completed]),
               **mean_std("val_loss", [row["val_loss"] for row in completed]),
               "out_of_fold": {key: oof[key] for key in ("n", "correct", "accuracy", "low", "high")},
               "confusion_matrix": {"classes": class_names, "counts": oof["counts"]},
               "per_fold": [{key: row[key] for key in CSV_COLUMNS} for row in rows]}
    table = format_summary(summary, rows)
    run_files.write_json(cv_dir / SUMMARY_JSON, summary)
    run_files.write_text(cv_dir / SUMMARY_CSV, csv_text(CSV_COLUMNS, [{key: row[key] for key in CSV_COLUMNS} for row in rows]))
    run_files.write_text(cv_dir / SUMMARY_MD, f"# Cross-validation: {plan['name']}, {plan['folds']} folds\n\n{table}\n")
    if oof["n"]:
        fig = plots.plot_confusion_matrix(oof["counts"], class_names,
                                          title=f"{cv_dir.name}: out of fold ({oof['n']} images, {len(completed)} folds)")
        run_files.save_figure(fig, cv_dir / CONFUSION_PNG)
    return summary, table


def format_summary(summary, rows):
    columns = [Column("FOLD", RIGHT), Column("STATE"), Column("EPOCHS", RIGHT), Column("BEST", RIGHT), Column("VAL LOSS", RIGHT),
               Column("VAL ACC", RIGHT), Column("OUT OF FOLD", RIGHT), Column("RUN")]

    def cell(value, digits=4):
        return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    lines = [[str(row["fold"]), row["state"], cell(row["epochs"]), cell(row["best_epoch"]), cell(row["val_loss"]),
              accuracy_cell(row["val_accuracy"], row["num_val"]),
              "-" if row["oof_correct"] is None else f"{row['oof_correct']}/{row['num_val']}", row["run_dir"] or "-"]
             for row in rows]
    lines.append(["mean ± std", "", "", "", mean_std_cell(summary, "val_loss"), mean_std_cell(summary, "val_accuracy"), "", ""])
    text = format_table(columns, lines, markdown=True)
    oof = summary["out_of_fold"]
    if oof["n"]:
        whole = "every image of the training pool" if oof["n"] == summary["pool"] else f"{oof['n']} of the pool's {summary['pool']} images"
        text += (f"\n\nOut-of-fold accuracy: {oof['accuracy']:.4f} ({oof['correct']}/{oof['n']}, 95% CI "
                 f"{oof['low']:.3f}–{oof['high']:.3f}): {whole}, each predicted once by the fold model that did not train on it.")
    failed = [row for row in rows if row["state"] != run_files.COMPLETED]
    text += "".join(f"\nfold {row['fold']}: {row['state']}: {row['reason']}" for row in failed)
    return text
