"""tf.distribute: the `distribution` config section, TF_CONFIG from --workers, and mirrored training on two CPUs."""

import json
import os
import subprocess
import sys
from textwrap import dedent

import pytest

from cnnlab.config.experiment import config_from_text
from cnnlab.training.distribute import ClusterError, tf_config_for
from cnnlab.errors import ConfigError

from conftest import REPO, TINY_DIGITS, run_cli

TIMEOUT_S = 120


def config_with(extra):
    return config_from_text(TINY_DIGITS + dedent(extra))


def test_defaults_keep_single_device_training():
    config = config_from_text(TINY_DIGITS)
    assert config.distribution.strategy == "default"
    assert config.distribution.devices is None
    assert config.distribution.scale_learning_rate == "none"
    assert config.mixed_precision is False


def test_mirrored_devices_are_kept():
    config = config_with("distribution: {strategy: mirrored, devices: [GPU:0, GPU:1], scale_learning_rate: linear}\n")
    assert config.distribution.devices == ("GPU:0", "GPU:1")
    assert config.raw["distribution"]["devices"] == ["GPU:0", "GPU:1"]
    assert config.distribution.scale_learning_rate == "linear"


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        config_with("distribution: {strategy: mirored}\n")
    assert str(error.value) == ("distribution.strategy: expected one of default, one_device, mirrored, multi_worker, "
                                "data_parallel (did you mean mirrored?), received 'mirored'")


def test_devices_are_for_mirrored_only():
    with pytest.raises(ConfigError) as error:
        config_with("distribution: {strategy: multi_worker, devices: [GPU:0]}\n")
    assert str(error.value).startswith("distribution.devices: is for distribution.strategy mirrored only")


def test_a_malformed_device_names_its_index():
    with pytest.raises(ConfigError) as error:
        config_with("distribution: {strategy: mirrored, devices: [GPU:0, graphics]}\n")
    assert str(error.value) == "distribution.devices[1]: expected a device name such as GPU:0 or CPU:1, received 'graphics'"


def test_mixed_precision_is_a_boolean_or_a_policy():
    with pytest.raises(ConfigError) as error:
        config_with("mixed_precision: fp16\n")
    assert str(error.value) == "mixed_precision: expected true, false, mixed_float16 or mixed_bfloat16, received 'fp16'"
    assert config_with("mixed_precision: true\n").mixed_precision == "mixed_float16"
    assert config_with("mixed_precision: mixed_bfloat16\n").mixed_precision == "mixed_bfloat16"


def test_unknown_distribution_key_is_refused():
    with pytest.raises(ConfigError) as error:
        config_with("distribution: {strategy: mirrored, gpus: 2}\n")
    assert str(error.value).startswith("distribution.gpus: unknown key")


def test_workers_become_tf_config():
    spec = json.loads(tf_config_for("10.0.0.1:2222, 10.0.0.2:2222", 1))
    assert spec == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("workers, index, message", [
    ("10.0.0.1:2222", 0, "--workers needs at least two host:port addresses"),
    ("10.0.0.1:2222,10.0.0.2", 0, "--workers: expected host:port, received '10.0.0.2'"),
    ("10.0.0.1:2222,10.0.0.2:2222", 2, "--worker-index must be between 0 and 1 for 2 workers, received 2"),
])
def test_bad_workers_are_one_line(workers, index, message):
    with pytest.raises(ClusterError) as error:
        tf_config_for(workers, index)
    assert str(error.value).startswith(message)


def test_mixed_precision_without_a_gpu_is_refused_before_the_run_folder(write_config, tmp_path):
    import tensorflow as tf
    from click.testing import CliRunner

    from cnnlab.cli import main

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    path = write_config(TINY_DIGITS + "mixed_precision: true\n")
    result = CliRunner().invoke(main, ["train", str(path), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 2
    assert result.output == (f"Error: {path}: mixed_precision: true needs a GPU and none is visible; "
                             "set mixed_precision: false to train in float32 on the CPU\n")
    assert not (tmp_path / "runs").exists()


MIRRORED_SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

# Two logical CPUs must exist before TensorFlow initialises its devices, hence a process of its own.
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
from cnnlab.config.experiment import config_from_text
from cnnlab.training.train import train

base, runs_dir = sys.argv[1], Path(sys.argv[2])
single = train(config_from_text(base, default_name="single"), runs_dir, verbose=0)
mirrored = train(config_from_text(base + "distribution: {strategy: mirrored, devices: [CPU:0, CPU:1]}\\n",
                                  default_name="mirrored"), runs_dir, verbose=0)
a = keras.models.load_model(single.run_dir / "best.keras").get_weights()
b = keras.models.load_model(mirrored.run_dir / "best.keras").get_weights()
print("MAX_DIFF", max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)))
print("REPLICAS", __import__("json").loads((mirrored.run_dir / "env.json").read_text())["distribution"]["replicas"])
"""


def run_python(script, *args, timeout=TIMEOUT_S, env=None):
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_mirrored_on_two_cpus_matches_single_device_training(tmp_path):
    # Shuffled, seeded: the same samples in the same order make the same global batches.
    base = (TINY_DIGITS.replace("  epochs: 2", "  epochs: 1")
            + "compile: {optimizer: {name: sgd, learning_rate: 0.1}}\n")  # SGD: a wrong gradient scale would show
    result = run_python(MIRRORED_SCRIPT, base, tmp_path / "runs")
    assert result.returncode == 0, result.stderr[-3000:]
    values = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("MAX_DIFF", "REPLICAS")))
    assert values["REPLICAS"] == "2"
    assert float(values["MAX_DIFF"]) < 1e-3
    assert len(list((tmp_path / "runs").iterdir())) == 2


def free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_an_unreachable_worker_is_one_line_naming_its_address(monkeypatch):
    from cnnlab.training.distribute import wait_for_workers

    me, other = free_ports(2)
    monkeypatch.setenv("TF_CONFIG", tf_config_for(f"127.0.0.1:{me},127.0.0.1:{other}", 0))
    with pytest.raises(ClusterError) as error:
        wait_for_workers(timeout_s=1)
    assert str(error.value).startswith(f"cannot reach worker 127.0.0.1:{other} within 1 s (Connection refused); ")


def error_lines(stderr):
    """cnnlab's own lines in a process's stderr, without TensorFlow's C++ log."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def test_single_device_training_ignores_tf_config_in_one_line(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config_for("127.0.0.1:23456,127.0.0.1:23457", 0))
    result = run_cli("train", tiny_config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == ("Note: TF_CONFIG is ignored: distribution.strategy is default, so this process trains alone "
                             "(--strategy multi_worker joins the cluster)\n")


def test_a_cluster_whose_first_address_is_not_this_machine_is_one_line(tiny_config, tmp_path):
    # TensorFlow's coordination service connected to it without end (and deaf to SIGTERM) before cnnlab looked
    address = f"cnnlab-no-such-host.invalid:{free_ports(1)[0]}"
    tf_config = json.dumps({"cluster": {"worker": [address]}, "task": {"type": "worker", "index": 0}})
    result = run_python("from cnnlab.cli import main; main()", "train", tiny_config, "--runs-dir", tmp_path / "runs", "-q",
                        "--strategy", "multi_worker", timeout=60, env={"TF_CONFIG": tf_config, "CNNLAB_CONNECT_TIMEOUT": "1"})
    assert result.returncode == 2
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"Error: cannot reach this worker's own address {address} within 1 s (")
    assert line.endswith("); TensorFlow connects to it from this worker too: give an address of this machine")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


WORKER_SCRIPT = """
import sys
import numpy as np
import cnnlab.training.train
from cnnlab.cli import main

weights_path, args = sys.argv[1], sys.argv[2:]
original = cnnlab.training.train.fit_into

def fit_and_keep_weights(run_dir, job, *rest, **kwargs):
    result = original(run_dir, job, *rest, **kwargs)
    np.savez(weights_path, *job.model.get_weights())  # for the test's comparison only
    return result

cnnlab.training.train.fit_into = fit_and_keep_weights
main(args)
"""


def test_two_workers_train_one_run_folder_with_identical_weights(write_config, tmp_path):
    import numpy as np

    config = write_config(TINY_DIGITS.replace("  epochs: 2", "  epochs: 1"))
    workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "CNNLAB_CONNECT_TIMEOUT": "60",
           "TMPDIR": str(tmp_path)}  # a killed worker's temporary folder stays in the test's folder
    env.pop("TF_CONFIG", None)
    processes = [subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(tmp_path / f"weights{i}.npz"), "train", str(config),
                                   "--runs-dir", str(tmp_path / f"runs{i}"), "-q", "--strategy", "multi_worker",
                                   "--workers", workers, "--worker-index", str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
                 for i in range(2)]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in processes]
    finally:
        for p in processes:  # a hung worker must not outlive the test
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert outputs[1][0].strip().startswith("Worker done in")
    (run_dir,) = (tmp_path / "runs0").iterdir()
    assert not (tmp_path / "runs1").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.yaml", "model_summary.txt", "best.keras", "history.csv", "metrics.json", "class_names.json",
         "env.json", "status", "loss.png", "accuracy.png", "preprocessing.json"])
    assert (run_dir / "status").read_text().startswith("completed")
    chief, worker = (np.load(tmp_path / f"weights{i}.npz") for i in range(2))
    assert len(chief.files) == 4
    for key in chief.files:
        np.testing.assert_array_equal(chief[key], worker[key])


def start_workers(args_for, tmp_path, addresses=None, env_for=lambda i: {}, program_for=lambda i: ["-m", "cnnlab.cli"]):
    """Starts the two workers of a cluster on this machine; `env_for(i)` and `program_for(i)` set one apart."""
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), "CNNLAB_CONNECT_TIMEOUT": "60",
           "TMPDIR": str(tmp_path)}  # a killed worker's temporary folder stays in the test's folder
    env.pop("TF_CONFIG", None)
    workers = ",".join(addresses or [f"127.0.0.1:{port}" for port in free_ports(2)])
    return [subprocess.Popen([sys.executable, *program_for(i), *args_for(i), "-q", "--workers", workers, "--worker-index", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**env, **env_for(i)}, cwd=tmp_path)
            for i in range(2)]


def finish(processes, timeout=TIMEOUT_S):
    try:
        return [p.communicate(timeout=timeout) for p in processes]
    finally:
        stop(processes)


def stop(processes):
    """Kills the processes still running: a hung worker must not outlive the test."""
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_a_killed_multi_worker_run_resumes_on_both_workers(write_config, tmp_path):
    import time

    from cnnlab.rundir import files as run_files, resume_state

    epochs = 6
    config = write_config(TINY_DIGITS.replace("  epochs: 2", f"  epochs: {epochs}").replace("  batch_size: 64", "  batch_size: 16")
                          + "  callbacks: {early_stopping: null}\n")
    processes = start_workers(lambda i: ["train", str(config), "--runs-dir", str(tmp_path / f"runs{i}"), "--strategy", "multi_worker"], tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not list(tmp_path.glob("runs0/*/backup/training_metadata.json")) or resume_state.backup_epoch(next((tmp_path / "runs0").iterdir())) < 2:
            assert time.monotonic() < deadline and all(p.poll() is None for p in processes), "no backup was written in time"
            time.sleep(0.05)
    finally:
        for p in processes:  # both machines lost at once
            p.kill()
        finish(processes)
    (run_dir,) = (tmp_path / "runs0").iterdir()
    outputs = finish(start_workers(lambda i: ["train", "--resume", str(run_dir)], tmp_path))
    assert outputs[1][0].strip().startswith("Worker done in"), outputs[1]
    assert run_files.read_status(run_dir).state == "completed", [err[-2000:] for _, err in outputs]
    assert run_files.read_history(run_dir / "history.csv")["epoch"] == list(range(1, epochs + 1))
    assert not (tmp_path / "runs1").exists()


STEP_TIMEOUT_S = 10
LONG_TRAINING = (TINY_DIGITS.replace("  epochs: 2", "  epochs: 40").replace("  batch_size: 64", "  batch_size: 16")
                 + "  callbacks: {early_stopping: null}\n")  # still training long after the first epoch

STALLING_WORKER = """
import sys
import time

import keras
from cnnlab.cli import main

fit = keras.Model.fit

def fit_and_stall(self, *args, callbacks=(), **kwargs):
    # alive and answering, but never in a step again after its first epoch: a hung disk, a deadlock
    stall = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(3600))
    return fit(self, *args, callbacks=[*callbacks, stall], **kwargs)

keras.Model.fit = fit_and_stall
main(sys.argv[1:])
"""


def multi_worker_training(config, tmp_path):
    return lambda i: ["train", str(config), "--runs-dir", str(tmp_path / f"runs{i}"), "--strategy", "multi_worker"]


def chief_run_after_first_epoch(tmp_path, processes):
    """The chief's run folder, once its first epoch is in history.csv."""
    import time

    deadline = time.monotonic() + TIMEOUT_S
    while not list(tmp_path.glob("runs0/*/history.csv")):
        ended = [p for p in processes if p.poll() is not None]
        assert not ended, f"a worker ended before the chief's first epoch: {ended[0].communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no epoch finished in time"
        time.sleep(0.05)
    (run_dir,) = (tmp_path / "runs0").iterdir()
    return run_dir


def test_a_worker_killed_mid_training_ends_the_chief_in_one_line(write_config, tmp_path):
    from cnnlab.rundir import files as run_files

    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = start_workers(multi_worker_training(write_config(LONG_TRAINING), tmp_path), tmp_path, addresses,
                              env_for=lambda i: {"CNNLAB_STEP_TIMEOUT": str(STEP_TIMEOUT_S)})
    try:
        run_dir = chief_run_after_first_epoch(tmp_path, processes)
        processes[1].kill()
        (_, err), _ = finish(processes, timeout=STEP_TIMEOUT_S + 20)  # TensorFlow's heartbeats or cnnlab's watchdog, whichever first
    finally:
        stop(processes)
    assert processes[0].returncode == 2, err[-3000:]
    assert len(error_lines(err)) == 1, err[-3000:]
    (line,) = error_lines(err)
    assert line.startswith(f"Error: worker {addresses[1]} stopped answering; ")
    assert line.endswith(f"; resume with: cnnlab train --resume {run_dir} on every worker")
    assert "Traceback" not in err
    assert run_files.read_status(run_dir) == run_files.RunStatus(run_files.FAILED, line.removeprefix("Error: "))


def test_a_worker_stuck_mid_training_ends_the_chief_after_the_step_timeout(write_config, tmp_path):
    from cnnlab.rundir import files as run_files

    processes = start_workers(multi_worker_training(write_config(LONG_TRAINING), tmp_path), tmp_path,
                              env_for=lambda i: {"CNNLAB_STEP_TIMEOUT": str(STEP_TIMEOUT_S) if i == 0 else "3600"},
                              program_for=lambda i: ["-m", "cnnlab.cli"] if i == 0 else ["-c", STALLING_WORKER])
    try:
        run_dir = chief_run_after_first_epoch(tmp_path, processes)
        ((_, err),) = finish(processes[:1], timeout=STEP_TIMEOUT_S + 20)  # TensorFlow itself would wait for ever
    finally:
        stop(processes)
    assert processes[0].returncode == 2, err[-3000:]
    reason = (f"no training step finished in {STEP_TIMEOUT_S} s (CNNLAB_STEP_TIMEOUT), though every worker still answers: one is stuck, "
              f"or a step needs a larger CNNLAB_STEP_TIMEOUT; resume with: cnnlab train --resume {run_dir} on every worker")
    assert error_lines(err) == [f"Error: {reason}"]
    assert "Traceback" not in err
    assert run_files.read_status(run_dir) == run_files.RunStatus(run_files.FAILED, reason)
