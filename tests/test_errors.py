"""one_line and short_repr: the helpers every error message goes through before it reaches a terminal."""

import tracemalloc

from cnnlab.errors import ConfigError, one_line, short_repr


def test_line_breaks_and_terminal_escapes_become_single_spaces():
    assert one_line(ValueError("cannot read\n  line 2\x1b[31m red\r\n")) == "cannot read line 2 [31m red"


def test_an_exception_without_text_is_named_by_its_type():
    assert one_line(KeyError()) == "KeyError"


def test_empty_text_stays_empty():
    assert one_line("") == ""


def test_a_config_error_naming_a_hostile_key_is_one_line():
    error = ConfigError("model.layers[0].Conv2D.bad\nkey", "unknown argument", source="a\tb.yaml")
    assert str(error) == "a b.yaml: model.layers[0].Conv2D.bad key: unknown argument"


def test_short_repr_of_a_short_value_is_its_repr_in_its_own_order():
    assert short_repr({"b": 1, "a": [1, (2,), frozenset()], "c": {1.5, None}}) == "{'b': 1, 'a': [1, (2,), frozenset()], 'c': {1.5, None}}"


def test_short_repr_cuts_a_long_value_at_the_limit():
    assert short_repr(list(range(100)), limit=20) == "[0, 1, 2, 3, 4, 5..."
    assert short_repr("word " * 100, limit=12) == "'word wor..."


def test_short_repr_of_ten_billion_items_by_reference_reads_only_what_it_shows():
    value = [0] * 10
    for _ in range(9):  # what a YAML alias bomb is once loaded: one list, ten times over, nine levels deep
        value = [value] * 10
    tracemalloc.start()
    try:
        text = short_repr(value)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text == ("[" * 8 + str([[0] * 10] * 3))[:57] + "..."
    assert peak < 2**20, peak


def test_short_repr_names_an_int_too_long_for_python_to_print():
    assert short_repr([1, 1 << 20_000]) == "[1, <an integer too long to print>]"
