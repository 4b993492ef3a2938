"""TensorFlow's start-up log lines stay off the terminal; cnnlab's own errors and --debug's logs do not."""

import os
import subprocess
import sys

import pytest

from cnnlab.runtime.tf_logs import is_start_up_log, start_up_logs_hidden

from conftest import REPO, TINY_DIGITS

START_UP_LOGS = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796079278.525918    4322 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n"
    "E0000 00:00:1796079280.915208    4322 cuda_dnn.cc:8579] Unable to register cuDNN factory: a factory is already registered\n"
    "W1123 08:43:29.123456    4322 computation_placer.cc:177] computation placer already registered.\n"
)


def cnnlab(*args):
    """`python -m cnnlab.cli ARGS` as a user's shell runs it: a fresh process, TensorFlow's log level not preset."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_check_prints_nothing_on_stderr(write_config):
    result = cnnlab("check", write_config(TINY_DIGITS))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip().endswith("OK, 690 parameters")


def test_an_error_after_tensorflow_started_still_reaches_stderr(write_config):
    path = write_config(TINY_DIGITS.replace("Conv2D", "Conv2d", 1))
    result = cnnlab("check", path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: {path}: model.layers[0]: unknown Keras layer 'Conv2d'")
    assert result.stderr.count("\n") == 1


def test_debug_shows_tensorflows_start_up_lines(write_config):
    """TensorFlow 2.21 logs at import on Linux: oneDNN on x86, missing CUDA drivers, or CUDA libraries registering."""
    result = cnnlab("--debug", "check", write_config(TINY_DIGITS))
    assert result.returncode == 0, result.stderr
    assert any(is_start_up_log(line) for line in result.stderr.splitlines(keepends=True)), result.stderr


def test_start_up_log_lines_are_dropped_and_other_output_replayed(capfd):
    with start_up_logs_hidden():
        os.write(2, START_UP_LOGS.encode() + b"UserWarning: something real\n")
    assert capfd.readouterr().err == "UserWarning: something real\n"


def test_everything_captured_is_replayed_when_the_start_fails(capfd):
    with pytest.raises(ImportError):
        with start_up_logs_hidden():
            os.write(2, START_UP_LOGS.encode())
            raise ImportError("libcudart.so.12: cannot open shared object file")
    assert capfd.readouterr().err == START_UP_LOGS


@pytest.mark.parametrize("line", [
    "F0000 00:00:1796079280.915208    4322 cuda_dnn.cc:1] Check failed: fatal\n",
    "Error: config.yaml: model: is missing\n",
    "2026-11-30 22:55:10.000: I tensorflow/core/x.cc:1] not absl's format\n",
])
def test_fatal_lines_and_other_text_are_never_taken_for_start_up_logs(line):
    assert not is_start_up_log(line)


@pytest.mark.tensorflow_only
def test_an_ensemble_of_five_runs_is_evaluated_without_tensorflows_retracing_warning(tmp_path):
    """Five members compile five predict functions on the same images, which TensorFlow takes for a mistake from
    the fifth on ("triggered tf.function retracing"): evaluate of an ensemble says nothing of it on stderr."""
    import shutil

    from conftest import train_run

    run_dir = train_run(tmp_path / "one", TINY_DIGITS.replace("epochs: 2", "epochs: 1"))
    for copy in range(1, 5):
        shutil.copytree(run_dir, tmp_path / "one" / "runs" / f"{run_dir.name}-copy{copy}")
    done = subprocess.run([sys.executable, "-m", "cnnlab.cli", "evaluate", str(tmp_path / "one" / "runs")],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    assert "Ensemble: the mean of 5 runs' probabilities" in done.stdout
    assert "retracing" not in done.stderr, done.stderr
