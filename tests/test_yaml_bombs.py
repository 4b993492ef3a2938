"""YAML that expands far beyond its size (an alias bomb) is refused in one line, at once, by every command that reads it.

A bomb of nine anchors, each a list of nine aliases of the one before, is a kilobyte of
text that `yaml.safe_load` reads into 9**9 values; cnnlab used to walk them for minutes and
gigabytes. Keras is started once for the module (`warm`), so that the time and memory
guards measure the refusal, not TensorFlow's start-up.
"""

import time
import tracemalloc

import pytest

from cnnlab.config.yaml_safety import load_yaml
from conftest import TINY_DIGITS, assert_one_line_error, run_cli

ALIAS_BOMB_HEAD = "its aliases expand it to more than 10,000 values from"


def bomb_lines(indent, levels=9, width=9):
    """A YAML block list: item 0 holds `width` strings, each later item `width` aliases of the one before."""
    lines = [f"{indent}- &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"{indent}- &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def flow_bomb(levels=6, width=10):
    """The same as one line of flow YAML, for --set and --param."""
    items = [f"&l0 [{', '.join(['1'] * width)}]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"[{', '.join(items)}]"


SHAPE_LINE = "  input_shape: [8, 8, 1]"
BOMBS = {  # where the bomb is: (config text, the path and line the error names)
    "compile.metrics": ("compile:\n  metrics:\n" + bomb_lines("    ") + TINY_DIGITS, "compile.metrics[8]: line 11"),
    "sweep choice": (TINY_DIGITS + "sweep:\n  trials: 2\n  params:\n    train.batch_size:\n      choice:\n" + bomb_lines("        "),
                     f"sweep.params.train.batch_size.choice[8]: line {len(TINY_DIGITS.splitlines()) + 14}"),
    "model.input_shape": (TINY_DIGITS.replace(SHAPE_LINE, "  input_shape:\n" + bomb_lines("    ").rstrip("\n")),
                          f"model.input_shape[8]: line {TINY_DIGITS.splitlines().index(SHAPE_LINE) + 10}"),
}


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Keras and the commands' modules imported before any guard starts counting."""
    run_cli("check", "--help")
    from cnnlab.runtime import backend

    backend.select(None)
    backend.start()
    import cnnlab.search.sweep  # noqa: F401
    import cnnlab.training.train  # noqa: F401


def invoke_measured(*args):
    """run_cli, with its seconds and the peak of the memory Python allocated meanwhile."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = run_cli(*args)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, seconds, peak


@pytest.mark.parametrize("command", ["check", "train", "sweep"])
@pytest.mark.parametrize("where", list(BOMBS))
def test_an_alias_bomb_is_refused_in_one_line_at_once(tmp_path, command, where):
    text, named = BOMBS[where]
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    assert len(text) < 2_000
    args = [command, config] + ([] if command == "check" else ["--runs-dir", tmp_path / "runs"])
    result, seconds, peak = invoke_measured(*args)
    assert_one_line_error(result, f"{config}: {named}: {ALIAS_BOMB_HEAD} {len(text):,} characters of YAML, "
                                  "refused as an alias bomb; write the values out", exact=True)
    assert seconds < 10  # a hang guard: it was minutes
    assert peak < 20 * 2**20, peak  # and gigabytes
    assert not (tmp_path / "runs").exists()


def test_an_alias_bomb_in_a_set_value_is_refused_naming_the_option(tmp_path, tiny_config):
    value = flow_bomb()
    result, seconds, _ = invoke_measured("check", tiny_config, "--set", f"compile.metrics={value}")
    assert_one_line_error(result, f"{tiny_config}: --set compile.metrics[5]: {ALIAS_BOMB_HEAD} {len(value)} characters of YAML")
    assert seconds < 10


def test_an_alias_bomb_in_a_param_space_is_refused_naming_the_option(tmp_path, tiny_config):
    space = "{choice: " + flow_bomb() + "}"
    result = run_cli("sweep", tiny_config, "--param", f"train.batch_size={space}", "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"{tiny_config}: --param train.batch_size.choice[5]: {ALIAS_BOMB_HEAD} {len(space)} characters")
    assert not (tmp_path / "runs").exists()


def test_an_alias_inside_its_own_anchor_is_refused_as_endless(tmp_path):
    config = tmp_path / "loop.yaml"
    config.write_text("compile:\n  metrics: &m [accuracy, *m]\n" + TINY_DIGITS)
    result = run_cli("check", config)
    assert_one_line_error(result, f"{config}: compile.metrics: line 2: an alias inside its own anchor makes the value endless; "
                                  "write the value out", exact=True)


def test_aliases_that_reuse_a_block_a_few_times_are_read_as_ever(tmp_path):
    config = tmp_path / "reuse.yaml"
    config.write_text(TINY_DIGITS.replace("    - Conv2D: {filters: 4, kernel_size: 3, activation: relu, padding: same}",
                                          "    - Conv2D: &conv {filters: 4, kernel_size: 3, activation: relu, padding: same}\n"
                                          "    - Conv2D: *conv"))
    result = run_cli("check", config)
    assert result.exit_code == 0, result.output
    assert result.output.count("Conv2D") == 2


def test_an_integer_too_long_for_python_to_print_is_a_yaml_error_at_its_line(tmp_path):
    config = tmp_path / "huge.yaml"
    config.write_text(TINY_DIGITS.replace("seed: 7", "seed: 0x" + "f" * 4000))
    result = run_cli("check", config)
    assert_one_line_error(result, f"{config}: line 2, column 7: YAML syntax error: an integer of more than 4,000 digits", exact=True)


def test_a_huge_value_in_an_error_message_is_cut_short(tmp_path):
    config = tmp_path / "wide.yaml"
    config.write_text(TINY_DIGITS.replace(SHAPE_LINE, f"  input_shape: [{', '.join(['0'] * 50_000)}]"))
    result = run_cli("check", config)
    assert_one_line_error(result, f"{config}: model.input_shape: expected a list of 1 to 3 positive ints such as [28, 28, 1], "
                                  f"received {str([0] * 30)[:57]}...", exact=True)


def test_load_yaml_reads_what_safe_load_reads():
    text = "a: &x [1, 2]\nb: *x\nc: {<<: {k: 1}, d: 2}\nn: 0x10\n"
    assert load_yaml(text) == {"a": [1, 2], "b": [1, 2], "c": {"k": 1, "d": 2}, "n": 16}
