"""A run's TensorBoard logs are those Keras' `fit` writes, continue across a resume, and line runs up in HParams."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import keras
import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from cnnlab.training import callbacks
from cnnlab.rundir import files as run_files, listing
from cnnlab.tracking import tensorboard as tensorboard_logs
from cnnlab.config.experiment import load_config
from cnnlab.training.job import prepare
from conftest import BACKEND, TINY_DIGITS, free_port, run_cli, train_run
from test_resume_state import CtrlCAfter

# whole batches (a split batch draws the same update, rounded otherwise) and the order fit is given below
LOGGED = TINY_DIGITS.replace("  validation_split: 0.2\n",
                             "  validation_split: 0.2\n  shuffle: false\n  batch_parts: 1\n"
                             "  callbacks: {tensorboard: TENSORBOARD}\n")


def config_with(tensorboard, epochs=3):
    return LOGGED.replace("TENSORBOARD", tensorboard).replace("epochs: 2", f"epochs: {epochs}")


def read_logs(folder):
    """What TensorBoard shows of one log folder: {tag: [(step, value)]} of its scalars, the tags of everything
    else (histograms, the model's config, HParams), and whether it holds a graph; read with TensorBoard's own
    EventAccumulator."""
    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    scalars, other = {}, set()
    for tag in accumulator.Tags()["tensors"]:
        values = [(event.step, tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
        if all(value.ndim == 0 and value.dtype.kind == "f" for _, value in values):
            scalars[tag] = [(step, float(value)) for step, value in values]
        else:
            other.add(tag)
    return scalars, other, accumulator.Tags()["graph"]


def fit_as_keras_does(config_path, log_dir, **tensorboard):
    """The config's model, seeded as cnnlab seeds it, trained by plain `model.fit` with Keras' TensorBoard."""
    config = load_config(config_path)
    job = prepare(config)
    model, splits, prep = job.model, job.splits, job.prep
    x_train = splits.x_train.astype("float32") * prep.rescale
    x_val = splits.x_val.astype("float32") * prep.rescale
    model.fit(x_train, splits.y_train, batch_size=config.train.batch_size, epochs=config.train.epochs, shuffle=False,
              validation_data=(x_val, splits.y_val), verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir=str(log_dir), **tensorboard)])


def batches_per_epoch(run_dir):
    return -(-json.loads((run_dir / run_files.METRICS).read_text())["num_train"] // 64)


def assert_same_scalars(ours, theirs):
    assert ours.keys() == theirs.keys()
    for tag in theirs:
        assert [step for step, _ in ours[tag]] == [step for step, _ in theirs[tag]], tag
        np.testing.assert_allclose([v for _, v in ours[tag]], [v for _, v in theirs[tag]], rtol=1e-4, atol=1e-5, err_msg=tag)


def test_a_run_logs_the_tags_and_values_plain_fit_logs(tmp_path):
    run_dir = train_run(tmp_path, config_with("{histogram_freq: 1}"))
    config = tmp_path / "config.yaml"
    fit_as_keras_does(config, tmp_path / "fit", histogram_freq=1)

    for folder in ("train", "validation"):
        ours, our_histograms, _ = read_logs(run_dir / "tensorboard" / folder)
        theirs, their_histograms, _ = read_logs(tmp_path / "fit" / folder)
        assert_same_scalars(ours, theirs)
        assert our_histograms == their_histograms
    ours, histograms, graph = read_logs(run_dir / "tensorboard" / "train")
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= ours.keys()
    assert "keras" in histograms and any(tag.endswith("kernel/histogram") for tag in histograms)
    # the compiled step's graph, on TensorFlow (Keras 3.15's fit draws none: its train_function is no tf.function)
    assert graph == (BACKEND == "tensorflow")
    validation, _, _ = read_logs(run_dir / "tensorboard" / "validation")
    history = run_files.read_history(run_dir / run_files.HISTORY)  # and they are the run's own numbers
    np.testing.assert_allclose([v for _, v in ours["epoch_loss"]], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in validation["epoch_accuracy"]], history["val_accuracy"], rtol=1e-6)
    batches = batches_per_epoch(run_dir)
    assert [step for step, _ in validation["evaluation_loss_vs_iterations"]] == [batches, 2 * batches, 3 * batches]


def test_batch_level_logs_count_batches_as_keras_documents_update_freq(tmp_path):
    run_dir = train_run(tmp_path, config_with("{update_freq: 3}", epochs=2))
    config = tmp_path / "config.yaml"
    assert yaml.safe_load((run_dir / run_files.CONFIG).read_text())["train"]["steps_per_execution"] == 1
    fit_as_keras_does(config, tmp_path / "fit", update_freq=3)

    ours, _, _ = read_logs(run_dir / "tensorboard" / "train")
    theirs, _, _ = read_logs(tmp_path / "fit" / "train")
    assert [step for step, _ in ours["batch_loss"]] == list(range(3, 2 * batches_per_epoch(run_dir) + 1, 3))
    assert_same_scalars(ours, theirs)


def interrupt_before_the_backup(monkeypatch, epoch):
    """Ctrl-C at the end of `epoch` after TensorBoard and history logged it, before Keras' backup holds it:
    a resume trains that epoch again."""
    make = callbacks.make_callbacks

    def with_ctrl_c(*args):
        made = make(*args)
        return made[:-1] + [CtrlCAfter(epoch)] + made[-1:]  # BackupAndRestore is the last

    monkeypatch.setattr(callbacks, "make_callbacks", with_ctrl_c)


def all_logs(run_dir):
    return {folder: read_logs(run_dir / "tensorboard" / folder)[0] for folder in ("train", "validation")}


def test_a_resumed_run_continues_the_same_curves_with_every_step_once(tmp_path, monkeypatch):
    text = config_with("{update_freq: 2}", epochs=4)
    whole = train_run(tmp_path / "whole", text)

    with monkeypatch.context() as patch:
        interrupt_before_the_backup(patch, 3)
        config = tmp_path / "config.yaml"
        config.write_text(text)
        assert run_cli("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    before, _, _ = read_logs(run_dir / "tensorboard" / "train")
    assert [step for step, _ in before["epoch_loss"]] == [0, 1, 2]  # epoch 3 was logged; the backup holds 2
    assert run_cli("train", "--resume", run_dir, "-q").exit_code == 0

    resumed, expected = all_logs(run_dir), all_logs(whole)
    for folder in expected:
        assert_same_scalars(resumed[folder], expected[folder])
    assert [step for step, _ in resumed["train"]["batch_loss"]] == list(range(2, 4 * batches_per_epoch(run_dir) + 1, 2))
    _, histograms, _ = read_logs(run_dir / "tensorboard" / "train")
    assert "keras" in histograms


def test_trimming_keeps_what_came_before_the_resumed_epoch_and_each_kind_by_its_own_step(tmp_path):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb

    path = tmp_path / "train" / "events.out.tfevents.1.test.v2"
    path.parent.mkdir()
    written = [("epoch_loss", step) for step in range(4)] + [("batch_loss", step) for step in range(1, 9)]
    written += [("evaluation_loss_vs_iterations", step) for step in (4, 8, 12, 16)] + [("keras", 0)]
    records = [tensorboard_logs.version_record()] + [tensorboard_logs.event_record(scalar_pb(tag, 1.0), step)
                                                     for tag, step in written]
    tensorboard_logs.write_records(path, records)

    tensorboard_logs.trim_event_file(path, first_epoch=2, calls=4, iterations=8)
    kept = [Event.FromString(record) for record in tensorboard_logs.read_records(path)]
    assert kept[0].file_version == "brain.Event:2"
    assert [(event.summary.value[0].tag, event.step) for event in kept[1:]] == [
        ("epoch_loss", 0), ("epoch_loss", 1), ("batch_loss", 1), ("batch_loss", 2), ("batch_loss", 3), ("batch_loss", 4),
        ("evaluation_loss_vs_iterations", 4), ("evaluation_loss_vs_iterations", 8)]
    tensorboard_logs.trim_event_file(path, first_epoch=0, calls=0, iterations=0)
    assert not path.exists(), "a file with nothing before the resumed epoch goes"


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard_server():
    """`tensorboard --logdir DIR` started for the test on a loopback port; yields a function that starts it."""
    started = []

    def start(logdir):
        port = free_port()
        # TensorBoard imports TensorFlow, which imports Keras: under KERAS_BACKEND=torch that brings PyTorch into the
        # same process, which crashed it (README, "TensorBoard"); the logs are the same whichever backend wrote them
        env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
        process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                                    "--port", str(port), "--load_fast", "false"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        started.append(process)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
                return f"http://127.0.0.1:{port}"
            except OSError:
                assert process.poll() is None, "tensorboard exited"
                time.sleep(0.5)
        raise AssertionError("tensorboard did not answer within 90 s")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def test_the_hparams_dashboard_lists_a_comparisons_runs_with_their_settings_and_results(tmp_path, tensorboard_server):
    config = tmp_path / "config.yaml"
    config.write_text(config_with("{}", epochs=1))
    result = run_cli("compare-optimizers", config, "-o", "adam", "-o", "sgd:learning_rate=0.05", "--runs-dir",
                     tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (compare_dir,) = (tmp_path / "runs").iterdir()

    url = tensorboard_server(tmp_path / "runs")
    experiment = post_json(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    assert {"compile.optimizer.name", "train.batch_size", "model.layers[0].Conv2D.filters", "backend"} <= hparams
    metrics = {(info["name"]["group"], info["name"]["tag"]) for info in experiment["metricInfos"]}
    assert {("validation", "epoch_accuracy"), ("train", "epoch_loss"), ("", "best/val_loss"), ("", "test/accuracy")} <= metrics

    groups = post_json(f"{url}/data/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 10})["sessionGroups"]
    by_trial = {group["name"]: group for group in groups}
    children = sorted(path.name for path in compare_dir.iterdir() if run_files.is_run_dir(path))
    assert sorted(by_trial) == [f"{child} in {compare_dir.name}" for child in children]
    optimizers = {group["hparams"]["compile.optimizer.name"] for group in groups}
    assert optimizers == {"adam", "sgd"}
    for name, group in by_trial.items():
        metrics_json = json.loads((compare_dir / name.split(" in ")[0] / run_files.METRICS).read_text())
        values = {(value["name"]["group"], value["name"]["tag"]): value["value"] for value in group["metricValues"]}
        assert values[("", "test/accuracy")] == pytest.approx(metrics_json["test"]["accuracy"], rel=1e-6)
        assert values[("validation", "epoch_accuracy")] == pytest.approx(metrics_json["final"]["val_accuracy"], rel=1e-6)


def test_hparams_name_a_run_inside_its_group_and_write_settings_as_numbers_or_text(tmp_path, write_config):
    group = tmp_path / "compare-x"
    group.mkdir()
    (group / "compare.json").write_text("{}")
    assert tensorboard_logs.trial_name(group / "adam-s1") == "adam-s1 in compare-x"
    assert tensorboard_logs.trial_name(tmp_path / "tiny-1") == "tiny-1"
    sweep = tmp_path / "sweep-y"
    (sweep / "trials").mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    assert tensorboard_logs.trial_name(sweep / "trials" / "trial-0003") == "trial-0003 in sweep-y"

    hparams = tensorboard_logs.hparams_of(load_config(write_config(TINY_DIGITS)))
    assert hparams["train.batch_size"] == 64 and hparams["train.shuffle"] is True
    assert hparams["model.layers[0].Conv2D.activation"] == "relu"
    assert hparams["model.input_shape"] == "[8, 8, 1]" and hparams["data.path"] == "null"
    assert "name" not in hparams and not any(path.startswith("sweep") for path in hparams)


def test_a_resumed_run_writes_its_hparams_again_and_its_results_once(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "make_callbacks", lambda *args, make=callbacks.make_callbacks: make(*args) + [CtrlCAfter(1)])
        config = tmp_path / "config.yaml"
        config.write_text(config_with("{}", epochs=2))
        assert run_cli("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 130
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert read_logs(run_dir / "tensorboard")[0] == {}, "no results before the run ends"
    assert run_cli("train", "--resume", run_dir, "-q").exit_code == 0
    scalars, other, _ = read_logs(run_dir / "tensorboard")
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    assert scalars["best/epoch"] == [(1, metrics["best_epoch"])]
    assert [value for _, value in scalars["test/loss"]] == pytest.approx([metrics["test"]["loss"]])
    assert other == {"_hparams_/session_start_info"}
    shutil.rmtree(run_dir / "tensorboard" / "train")  # a folder TensorBoard reads whatever else is there
    assert read_logs(run_dir / "tensorboard")[0].keys() == scalars.keys()


def test_fine_tuning_continues_the_curves_of_the_first_phase(tmp_path, image_folder):
    text = f"""\
name: fine_tuned
seed: 7
data: {{source: image_folder, path: {image_folder}, color_mode: rgb, image_size: [32, 32], test_split: 0.25}}
model:
  input_shape: [32, 32, 3]
  backbone: {{name: MobileNet, weights: null, alpha: 0.25, pooling: avg}}
  layers:
    - Dense: {{units: 2, activation: softmax}}
train:
  epochs: 2
  batch_size: 8
  callbacks: {{tensorboard: {{update_freq: 1}}, early_stopping: null}}
  fine_tune: {{unfreeze: 10, epochs: 2, learning_rate: 1.0e-5}}
"""
    run_dir = train_run(tmp_path, text)
    logs = all_logs(run_dir)
    assert [step for step, _ in logs["train"]["epoch_loss"]] == [0, 1, 2, 3]
    batches = -(-json.loads((run_dir / run_files.METRICS).read_text())["num_train"] // 8)
    assert [step for step, _ in logs["train"]["batch_loss"]] == list(range(1, 4 * batches + 1))
    # the second phase's new optimizer counts its steps from 0 again; the curve does not
    assert [step for step, _ in logs["validation"]["evaluation_loss_vs_iterations"]] == [batches * i for i in (1, 2, 3, 4)]
    history = run_files.read_history(run_dir / run_files.HISTORY)
    np.testing.assert_allclose([v for _, v in logs["train"]["epoch_learning_rate"]], history["learning_rate"], rtol=1e-6)
    assert history["learning_rate"][-1] == pytest.approx(1e-5)


def test_each_trial_of_a_sweep_is_an_hparams_session_with_the_values_it_tried(tmp_path):
    from tensorboard.plugins.hparams import metadata

    text = config_with("{}", epochs=1) + """\
sweep:
  trials: 2
  sampler: random
  pruner: none
  params:
    model.layers[0].Conv2D.filters: {int: [2, 8], step: 2}
"""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = run_cli("sweep", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (sweep_dir,) = (tmp_path / "runs").glob("sweep-*")
    trials = listing.runs_in_group(sweep_dir, "sweep")
    assert len(trials) == 2
    for trial in trials:
        accumulator = EventAccumulator(str(trial / "tensorboard"), size_guidance={"tensors": 0})
        accumulator.Reload()
        content = accumulator.SummaryMetadata(metadata.SESSION_START_INFO_TAG).plugin_data.content
        session = metadata.parse_session_start_info_plugin_data(content)
        assert session.group_name == f"{trial.name} in {sweep_dir.name}"
        tried = yaml.safe_load((trial / run_files.CONFIG).read_text())["model"]["layers"][0]["Conv2D"]["filters"]
        assert session.hparams["model.layers[0].Conv2D.filters"].number_value == tried
