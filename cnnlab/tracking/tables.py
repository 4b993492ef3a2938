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
