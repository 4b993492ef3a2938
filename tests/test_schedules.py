"""Learning-rate schedules named in YAML: Keras' own and OneCycle, checked by name, recorded, and resumed at their step."""

import keras
import numpy as np
import pytest
import yaml

from cnnlab.model.schedules import OneCycle
from cnnlab.rundir import files as run_files
from conftest import TINY_DIGITS, assert_one_line_error, run_cli, write_and_train
from test_resume_state import comparable, only_run, train_interrupted_and_resumed

COSINE = "{schedule: CosineDecay, initial_learning_rate: 0.01, decay_steps: 100, warmup_target: 0.02, warmup_steps: 20}"


def with_rate(rate, text=TINY_DIGITS):
    return text.replace("model:", f"compile:\n  optimizer: {{name: adam, learning_rate: {rate}}}\nmodel:")


def test_a_schedule_resumed_after_ctrl_c_carries_on_at_the_step_it_stopped_at(tmp_path, monkeypatch):
    """The schedule reads the optimizer's iterations, which the backup restores: the rates after the resume are the
    uninterrupted run's, not those of a schedule started again at step 0."""
    text = with_rate(COSINE).replace("  epochs: 2", "  epochs: 4").replace("  batch_size: 64", "  batch_size: 32")
    whole = tmp_path / "whole"
    assert write_and_train(whole, text, check=False).exit_code == 0
    expected, _ = comparable(only_run(whole))

    run_dir = train_interrupted_and_resumed(tmp_path / "resumed", text, monkeypatch, 2)
    history, _ = comparable(run_dir)
    np.testing.assert_allclose(history["learning_rate"], expected["learning_rate"], rtol=1e-6)
    assert len(set(np.round(expected["learning_rate"], 8))) == 4, "each epoch should end at another rate"


def test_one_cycle_spans_the_run_when_its_steps_are_left_out_and_best_keras_loads_with_it(tmp_path):
    run_dir = write_and_train(tmp_path, with_rate("{schedule: one_cycle, max_learning_rate: 0.01}")).run_dir
    recorded = yaml.safe_load((run_dir / run_files.CONFIG).read_text())["compile"]["optimizer"]["learning_rate"]
    steps_per_epoch = -(-int(1437 * 0.8) // 64)  # digits without its 20% test split, 80% of that for training
    assert recorded == {"schedule": "one_cycle", "max_learning_rate": 0.01, "total_steps": 2 * steps_per_epoch}
    model = keras.models.load_model(run_dir / run_files.MODEL)
    assert isinstance(model.optimizer._learning_rate, OneCycle)
    rates = run_files.read_history(run_dir / run_files.HISTORY)["learning_rate"]
    assert rates[-1] == pytest.approx(0.01 / 25 / 1e4)  # the cycle ends at its lowest rate on the last step


def test_one_cycle_rises_to_its_peak_then_falls_below_where_it_started():
    schedule = OneCycle(max_learning_rate=0.1, total_steps=100, pct_start=0.3)
    rates = [float(schedule(step)) for step in range(100)]
    assert rates[0] == pytest.approx(0.1 / 25)
    assert max(rates) == pytest.approx(0.1) and rates.index(max(rates)) == 30
    assert rates[-1] == pytest.approx(0.1 / 25 / 1e4)
    assert OneCycle.from_config(schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("rate, expected", [
    ("{schedule: CosinDecay, initial_learning_rate: 0.01, decay_steps: 10}",
     "compile.optimizer.learning_rate.schedule: unknown learning-rate schedule 'CosinDecay'. Did you mean CosineDecay?"),
    ("{schedule: CosineDecay, initial_learning_rate: 0.01, decay_step: 10}",
     "compile.optimizer.learning_rate.decay_step: unknown argument of CosineDecay (did you mean decay_steps?); valid arguments: "
     "alpha, decay_steps, initial_learning_rate, name, warmup_steps, warmup_target"),
    ("{initial_learning_rate: 0.01}", "compile.optimizer.learning_rate: expected a number or a schedule such as"),
])
def test_a_wrong_schedule_is_one_line_naming_its_key(write_config, rate, expected):
    path = write_config(with_rate(rate))
    assert_one_line_error(run_cli("check", path), f"{path}: {expected}")


def test_reduce_lr_cannot_fight_a_schedule(write_config):
    path = write_config(with_rate(COSINE) + "  callbacks:\n    reduce_lr: {patience: 1}\n")
    assert_one_line_error(run_cli("check", path), f"{path}: train.callbacks.reduce_lr: cannot change a learning-rate schedule")


def test_a_checkpoint_that_saves_every_epoch_keeps_and_reports_the_last_epochs_model(tmp_path):
    """checkpoint.save_best_only false (a fixed schedule run to its end): best.keras is the last epoch's model, and
    metrics.json, the train output and evaluate describe that model, not the epoch the monitor liked best."""
    import json

    text = with_rate("{schedule: one_cycle, max_learning_rate: 0.01}").replace("  epochs: 2", "  epochs: 4") + (
        "  callbacks:\n    checkpoint: {monitor: val_loss, save_best_only: false}\n    early_stopping: null\n")
    trained = write_and_train(tmp_path, text)
    run_dir = trained.run_dir
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    history = run_files.read_history(run_dir / run_files.HISTORY)
    assert (metrics["kept"], metrics["best_epoch"]) == ("last", 4)
    assert metrics["best"]["val_loss"] == pytest.approx(history["val_loss"][-1])
    assert "Epochs: 4 (best.keras is the last epoch's: the checkpoint saves every epoch)" in trained.output
    assert f"Last val_loss: {history['val_loss'][-1]:.4f}" in trained.output
    result = run_cli("evaluate", run_dir, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-4)
