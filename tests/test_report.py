"""format_table: the one renderer behind the tables of runs, evaluate, visualize and compare; and the summary pieces compare and sweep share."""

from cnnlab.tracking.tables import RIGHT, Column, csv_text, format_table, mean_std, mean_std_cell

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


def test_one_value_has_a_mean_but_no_spread():
    assert mean_std("acc", [0.5, None]) == {"acc_mean": 0.5, "acc_std": None}
    assert mean_std_cell({"acc_mean": 0.5, "acc_std": None}, "acc") == "0.5000"


def test_a_spread_is_shown_beside_its_mean():
    row = mean_std("acc", [0.5, 0.7])
    assert mean_std_cell(row, "acc", digits=2) == "0.60 ± 0.14"


def test_csv_keeps_full_precision_and_leaves_missing_values_empty():
    assert csv_text(["name", "acc"], [{"name": "adam", "acc": 0.1 + 0.2}, {"name": "sgd", "acc": None}]) == \
        "name,acc\nadam,0.30000000000000004\nsgd,\n"
