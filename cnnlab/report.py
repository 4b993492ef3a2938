"""Aligned tables for people: `cnnlab runs`, evaluate's per-class scores, visualize's layer list, compare's summary.

One renderer, so every command's tables line up alike. Plain text separates columns
by two spaces and drops trailing blanks; Markdown (compare's summary.md, which is also
printed) puts the alignment into the rule under the titles, where renderers honour it.
"""

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
