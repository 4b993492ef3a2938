"""one_line: the one helper every error message goes through before it reaches a terminal."""

from cnnlab.errors import ConfigError, one_line


def test_line_breaks_and_terminal_escapes_become_single_spaces():
    assert one_line(ValueError("cannot read\n  line 2\x1b[31m red\r\n")) == "cannot read line 2 [31m red"


def test_an_exception_without_text_is_named_by_its_type():
    assert one_line(KeyError()) == "KeyError"


def test_empty_text_stays_empty():
    assert one_line("") == ""


def test_a_config_error_naming_a_hostile_key_is_one_line():
    error = ConfigError("model.layers[0].Conv2D.bad\nkey", "unknown argument", source="a\tb.yaml")
    assert str(error) == "a b.yaml: model.layers[0].Conv2D.bad key: unknown argument"
