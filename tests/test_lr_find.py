"""`cnnlab lr-find`: a learning-rate range test on the tiny digits config."""

import json

from conftest import assert_one_line_error, run_cli as run


def test_suggests_a_sensible_rate_and_writes_the_curve(tiny_config, tmp_path):
    out = tmp_path / "found"
    result = run("lr-find", tiny_config, "-o", out, "--steps", 60, "--set", "train.batch_size=32")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "lr_find.json").read_text())
    suggested = record["suggested_learning_rate"]
    assert 1e-4 <= suggested <= 1, record
    assert (out / "lr_find.png").stat().st_size > 10_000
    assert len(record["learning_rates"]) == len(record["smoothed_losses"]) <= 60
    lines = result.output.splitlines()
    assert lines[1] == f"Suggested learning rate: {suggested:.2e} (steepest descent of the smoothed loss)"
    assert lines[2] == f"Train with it: cnnlab train {tiny_config} --set compile.optimizer.learning_rate={suggested:.2e}"


def test_a_bad_config_is_one_line(write_config, tmp_path):
    config = write_config("name: x\ndata: {source: digits}\nmodel: {input_shape: [8, 8, 1], layers: [{Dense: {units: -3}}]}\n")
    assert_one_line_error(run("lr-find", config, "-o", tmp_path / "out"), f"{config}: model.layers[0]")


def test_start_must_be_below_end(tiny_config, tmp_path):
    result = run("lr-find", tiny_config, "-o", tmp_path / "out", "--start", 1, "--end", 0.1)
    assert_one_line_error(result, "--start/--end: expected 0 < start < end, received start=1, end=0.1")
