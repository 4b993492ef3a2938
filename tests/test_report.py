"""format_table: the one renderer behind the tables of runs, evaluate, visualize and compare."""

from cnnlab.report import RIGHT, Column, format_table

COLUMNS = (Column("name"), Column("accuracy", RIGHT))


def test_text_columns_fit_their_widest_cell_and_numbers_align_right():
    assert format_table(COLUMNS, [("adam", "0.9"), ("sgd+momentum", "0.8750")]).splitlines() == [
        "name          accuracy",
        "adam               0.9",
        "sgd+momentum    0.8750",
    ]


def test_text_lines_carry_no_trailing_blanks():
    assert format_table((Column("name"), Column("note")), [("adam", "")]).splitlines() == ["name  note", "adam"]


def test_markdown_puts_the_alignment_into_the_rule():
    assert format_table(COLUMNS, [("adam", "0.9")], markdown=True).splitlines() == [
        "| name | accuracy |",
        "|------|---------:|",
        "| adam |      0.9 |",
    ]
