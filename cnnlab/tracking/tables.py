"""Aligned tables for people: `cnnlab runs`, evaluate's per-class scores, visualize's layer list, compare's summary.

Also the pieces of a summary over repeated runs (mean ± sample std, its cells, a CSV of
its rows) that compare and sweep share. One renderer, so every command's tables line up alike. Plain text separates columns
by two spaces and drops trailing blanks; Markdown (compare's summary.md, which is also
printed) puts the alignment into the rule under the titles, where renderers honour it.
"""

import csv
import io
import statistics
from dataclasses import dataclass

from cnnlab.config.intervals import accuracy_cell
from cnnlab.config.metric_names import is_accuracy_name

LEFT, RIGHT = "<", ">"


@dataclass(frozen=True)
class Column:
    title: str
    align: str = LEFT  # RIGHT for numbers, so their digits line up


def format_table(columns, rows, markdown=False):
    """`rows` hold one string per column; each column is as wide as its longest cell or title."""
    table = [[column.title for column in columns]] + [list(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]

    def line(cells):
        padded = [f"{cell:{column.align}{width}}" for cell, column, width in zip(cells, columns, widths)]
        return "| " + " | ".join(padded) + " |" if markdown else "  ".join(padded).rstrip()

    lines = [line(cells) for cells in table]
    if markdown:
        lines.insert(1, "|" + "|".join("-" * (width + 1) + ":" if column.align == RIGHT else "-" * (width + 2)
                                       for column, width in zip(columns, widths)) + "|")
    return "\n".join(lines)


def number_cell(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def mean_std_cell(row, prefix, digits=4):
    """`row[prefix_mean] ± row[prefix_std]`, the mean alone where there is no spread, `-` where there is no mean."""
    value, spread = row[f"{prefix}_mean"], row[f"{prefix}_std"]
    if value is None:
        return "-"
    return f"{value:.{digits}f} ± {spread:.{digits}f}" if spread is not None else f"{value:.{digits}f}"


def mean(values):
    """The mean of the values that exist (None is left out); None where none does."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def mean_std(prefix, values):
    """Mean and sample standard deviation (None with fewer than two values: one run says nothing of spread)."""
    values = [v for v in values if v is not None]
    return {f"{prefix}_mean": mean(values), f"{prefix}_std": statistics.stdev(values) if len(values) > 1 else None}


def csv_text(columns, rows):
    """`rows` (dicts) as CSV in `columns` order: full-precision numbers (Python's repr round-trips), empty cells for None."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if row[key] is None else row[key] for key in columns} for row in rows)
    return out.getvalue()


RUNS_TABLE = ((Column("RUN"), "name"), (Column("CONFIG"), "config"), (Column("BACKEND"), "backend"), (Column("STATUS"), "status"),
              (Column("EPOCHS", RIGHT), "epochs"), (Column("BEST", RIGHT), "best_epoch"),
              (Column("BEST VAL ACC", RIGHT), "best_val_accuracy"), (Column("TEST ACC", RIGHT), "test_accuracy"),
              (Column("TRAIN TIME", RIGHT), "train_time_s"))


ACCURACY_COUNTS = {"best_val_accuracy": "num_val", "test_accuracy": "num_test"}  # the images each was measured on


def format_runs_table(rows):
    """An aligned table, newest first as given, then one line per run whose status has a reason.

    An accuracy measured on few images shows its 95% interval and n (intervals.accuracy_cell).
    """
    def cell(row, key):
        value = row[key]
        if key in ACCURACY_COUNTS:
            return accuracy_cell(value, row.get(ACCURACY_COUNTS[key]))
        if value is None:
            return "-"
        if key == "train_time_s":
            return f"{value:.1f} s"
        return str(value)

    columns = [column for column, _ in RUNS_TABLE]
    lines = [format_table(columns, [[cell(row, key) for _, key in RUNS_TABLE] for row in rows])]
    lines += [f"{row['name']}: {row['status']}: {row['reason']}" for row in rows if row["reason"]]
    return "\n".join(lines)



# the accuracies a group's best_n counts: `val_accuracy` (a comparison, a sweep's trial) and `out_of_fold_accuracy` (cv);
# a sweep by the training `accuracy` was measured on other images than its best_n
ACCURACY_PREFIXES = ("val_", "out_of_fold_")

GROUPS_TABLE = ((Column("SWEEP, COMPARISON OR CV"), "name"), (Column("KIND"), "kind"), (Column("RUNS", RIGHT), "runs"),
                (Column("COMPLETED", RIGHT), "completed"), (Column("BY"), "metric"), (Column("BEST", RIGHT), "best"),
                (Column("BEST RUN"), "best_run"))


def format_groups_table(rows):
    """The sweeps, comparisons and cross-validations; a best accuracy measured on few images shows its 95% interval
    and n, as the runs table does (a sweep's other metrics, a loss say, have none)."""
    def cell(row, key):
        value = row[key]
        if key == "best" and value is not None and any(is_accuracy_name(row["metric"], prefix) for prefix in ACCURACY_PREFIXES):
            return accuracy_cell(value, row.get("best_n"))
        if value is None:
            return "-"
        return f"{value:.4f}" if key == "best" else str(value)

    return format_table([column for column, _ in GROUPS_TABLE], [[cell(row, key) for _, key in GROUPS_TABLE] for row in rows])
