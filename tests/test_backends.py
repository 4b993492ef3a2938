"""cnnlab on every Keras backend: what one process's backend trains, the other backends use; what a backend cannot do is one line.

A process has one Keras backend for its life, so this file runs on the backend of the pytest
process (KERAS_BACKEND, TensorFlow when unset: README, "Run the tests") and starts the other
backends in subprocesses. Run on each backend in turn, it covers every pair.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from cnnlab.runtime import backend
from cnnlab.rundir import files as run_files
from conftest import REPO, TINY_DIGITS, assert_one_line_error, run_cli, train_run

HERE = keras.backend.backend()
INSTALLED = [name for name in backend.BACKENDS if importlib.util.find_spec(name) is not None]
OTHERS = [name for name in INSTALLED if name != HERE]
WITHOUT_TENSORFLOW = REPO / "tests" / "without_tensorflow"  # its sitecustomize.py hides TensorFlow from a subprocess
LEARNS = TINY_DIGITS.replace("  epochs: 2", "  epochs: 8").replace("  batch_size: 64", "  batch_size: 32").replace(
    "    - Flatten: {}\n", "    - Flatten: {}\n    - Dropout: {rate: 0.1}\n").replace(
    "model:", "compile:\n  optimizer: {name: adam, learning_rate: 0.01}\nmodel:")


def cnnlab(backend_name, *args, hide_tensorflow=False, env=None):
    """`python -m cnnlab.cli ARGS` in a new process on `backend_name`."""
    paths = ([str(WITHOUT_TENSORFLOW)] if hide_tensorflow else []) + [str(REPO)]
    full_env = {**os.environ, "KERAS_BACKEND": backend_name, "CNNLAB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(paths),
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=600)


def write_png(path, pixels):
    from PIL import Image

    Image.fromarray(pixels[..., 0]).save(path)
    return path


@pytest.fixture(scope="module")
def trained_here(tmp_path_factory):
    """A run trained on this process's backend, and a PNG of a digit to predict."""
    root = tmp_path_factory.mktemp("here")
    run_dir = train_run(root, LEARNS)
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images[0] * 255 / 16).astype(np.uint8)[..., np.newaxis]  # a 0
    return run_dir, write_png(root / "zero.png", pixels)


def test_the_run_records_its_backend_and_trains_to_the_band(trained_here):
    run_dir, _ = trained_here
    env = json.loads((run_dir / run_files.ENV).read_text())
    assert env["backend"] == HERE and env[HERE] == backend.version(HERE)
    metrics = json.loads((run_dir / run_files.METRICS).read_text())
    assert metrics["test"]["accuracy"] > 0.8, metrics  # 8 epochs of a 4-filter CNN at learning rate 0.01


@pytest.mark.parametrize("other", OTHERS)
def test_a_run_trained_here_evaluates_predicts_and_visualizes_on_another_backend(trained_here, other):
    run_dir, png = trained_here
    here = run_cli("evaluate", run_dir, "--json")
    assert here.exit_code == 0, here.output

    there = cnnlab(other, "evaluate", run_dir, "--json")
    assert there.returncode == 0, there.stderr
    ours, theirs = json.loads(here.output), json.loads(there.stdout)
    assert theirs["num_correct"] == ours["num_correct"]
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-4)

    predicted = cnnlab(other, "predict", png, "--run", run_dir, "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"][0]["top"][0]["class"] == "0"

    drawn = cnnlab(other, "visualize", run_dir, png)
    assert drawn.returncode == 0, drawn.stderr
    assert (run_dir / "visualize" / "filters_conv2d.png").is_file()


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="SavedModel and TensorFlow Lite are TensorFlow's formats")
def test_a_run_trained_here_exports_on_tensorflow_whatever_keras_backend_says(trained_here, tmp_path):
    run_dir, png = trained_here
    other = next(name for name in INSTALLED if name != "tensorflow") if len(INSTALLED) > 1 else "tensorflow"
    exported = cnnlab(other, "export", run_dir, "--format", "tflite", "--output", tmp_path / "export")
    assert exported.returncode == 0, exported.stderr
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["formats"]["tflite"]["check"]["top1_agreement"] >= 0.995

    predicted = cnnlab(other, "predict", png, "--model", tmp_path / "export" / "model.tflite", "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["predictions"][0]["top"][0]["class"] == "0"


def test_a_run_resumes_only_on_its_own_backend(tmp_path):
    from cnnlab.errors import RunError
    from cnnlab.training.train import resume

    run_dir = train_run(tmp_path, TINY_DIGITS)
    run_files.set_status(run_dir, run_files.INTERRUPTED, "after epoch 1 of 2")
    env = json.loads((run_dir / run_files.ENV).read_text())
    other = next(name for name in backend.BACKENDS if name != HERE)
    (run_dir / run_files.ENV).write_text(json.dumps({**env, "backend": other}))
    with pytest.raises(RunError) as error:
        resume(run_dir, verbose=0)
    assert str(error.value) == (f"{run_dir} trained on {other}, not {HERE}; resume it on the same backend: "
                                f"cnnlab train --resume {run_dir} --backend {other}")


def test_another_backend_than_the_running_one_is_one_line(tiny_config):
    other = next(name for name in backend.BACKENDS if name != HERE)
    assert_one_line_error(run_cli("check", tiny_config, "--backend", other),
                          f"Keras already runs on {HERE} in this process and cannot switch to {other}", exact=False)


def test_an_unknown_backend_in_the_environment_is_one_line(tiny_config, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    assert_one_line_error(run_cli("check", tiny_config), "KERAS_BACKEND: expected one of tensorflow, jax, torch, received 'theano'",
                          exact=True)


@pytest.mark.skipif(HERE == "tensorflow", reason="tf.distribute is TensorFlow's")
def test_a_tf_distribute_strategy_on_another_backend_is_one_line(tiny_config):
    other = "data_parallel (keras.distribution)" if HERE == "jax" else "--backend jax with data_parallel"
    assert_one_line_error(run_cli("train", tiny_config, "--strategy", "mirrored"),
                          f"{tiny_config}: distribution.strategy: mirrored is tf.distribute, which needs --backend tensorflow; "
                          f"on {HERE} use {other}", exact=True)


@pytest.mark.skipif(HERE != "torch", reason="PyTorch's refusal")
def test_torch_refuses_several_devices_with_one_line(tiny_config, tmp_path):
    assert_one_line_error(run_cli("train", tiny_config, "--set", "distribution.strategy=data_parallel", "--runs-dir", tmp_path / "r"),
                          f"{tiny_config}: distribution.strategy: data_parallel: cnnlab trains on one device with PyTorch")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(HERE != "tensorflow", reason="TensorFlow's refusal")
def test_data_parallel_under_tensorflow_is_one_line(tiny_config):
    assert_one_line_error(run_cli("train", tiny_config, "--set", "distribution.strategy=data_parallel"),
                          f"{tiny_config}: distribution.strategy: data_parallel is keras.distribution, which cnnlab runs on "
                          "--backend jax; under tensorflow use mirrored (tf.distribute)", exact=True)


@pytest.mark.skipif(HERE == "tensorflow", reason="split batches are cnnlab's TensorFlow loop")
def test_split_batches_on_another_backend_are_one_line(tiny_config):
    assert_one_line_error(run_cli("train", tiny_config, "--set", "train.batch_parts=2"),
                          f"{tiny_config}: train.batch_parts: can be more than 1 only with --backend tensorflow")


@pytest.mark.skipif(HERE != "jax" or "jax" not in INSTALLED, reason="keras.distribution.DataParallel runs on JAX")
def test_data_parallel_on_two_jax_cpu_devices_trains_as_one_device(tmp_path):
    # 1120 training images: every batch of 64 (and the last, of 32) divides between 2 devices, so no image is left out
    text = TINY_DIGITS.replace("  validation_split: 0.2", "  validation_split: 0.22")
    (tmp_path / "config.yaml").write_text(text)
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = cnnlab("jax", "train", tmp_path / "config.yaml", "--runs-dir", tmp_path / "two", "-q",
                    "--set", "distribution.strategy=data_parallel", env=two)
    assert result.returncode == 0, result.stderr
    (parallel,) = (tmp_path / "two").iterdir()
    assert json.loads((parallel / run_files.ENV).read_text())["distribution"]["replicas"] == 2
    single = train_run(tmp_path / "one", text)
    ours, theirs = run_files.read_history(single / run_files.HISTORY), run_files.read_history(parallel / run_files.HISTORY)
    for key in ("loss", "accuracy"):  # the same mean gradient over the same batches; the sums split in two
        np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-4, err_msg=key)


def test_mixed_float16_without_a_gpu_is_one_line(write_config, tmp_path):
    if backend.gpu_count():
        pytest.skip("this machine has a GPU")
    path = write_config(TINY_DIGITS + "mixed_precision: mixed_float16\n")
    assert_one_line_error(run_cli("train", path, "--runs-dir", tmp_path / "r"),
                          f"{path}: mixed_precision: mixed_float16 needs a GPU and none is visible; "
                          "set mixed_precision: false to train in float32 on the CPU", exact=True)


def test_mixed_bfloat16_trains_where_the_cpu_computes_it_and_is_one_line_elsewhere(write_config, tmp_path):
    path = write_config(TINY_DIGITS.replace("  epochs: 2", "  epochs: 1") + "mixed_precision: mixed_bfloat16\n")
    result = run_cli("train", path, "--runs-dir", tmp_path / "r", "-q")
    if backend.gpu_count() or backend.cpu_has_bfloat16():
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / "r").iterdir()
        assert np.isfinite(run_files.read_history(run_dir / run_files.HISTORY)["loss"]).all()
        assert keras.models.load_model(run_dir / run_files.MODEL).get_layer("conv2d").dtype_policy.name == "mixed_bfloat16"
    else:
        assert_one_line_error(result, f"{path}: mixed_precision: mixed_bfloat16 needs a GPU or a CPU with bfloat16 instructions")


@pytest.mark.skipif(HERE != "tensorflow", reason="every command runs in a subprocess on `other`, whatever this process "
                                                  "runs: the suite's TensorFlow run checks it, the JAX and PyTorch runs "
                                                  "would repeat it")
@pytest.mark.parametrize("other", [name for name in INSTALLED if name != "tensorflow"])
def test_every_command_runs_where_tensorflow_is_not_installed(tmp_path, other):
    from test_data import write_image_folder

    folder = write_image_folder(tmp_path / "images", per_class=8)
    config = tmp_path / "colours.yaml"
    config.write_text(f"""\
name: colours
data: {{source: image_folder, path: {folder}, image_size: [10, 10], color_mode: rgb}}
model:
  input_shape: [10, 10, 3]
  layers: [{{Conv2D: {{filters: 4, kernel_size: 3, activation: relu}}}}, Flatten, {{Dense: {{units: 3, activation: softmax}}}}]
train: {{epochs: 2, batch_size: 8, validation_split: 0.25}}
""")
    runs_dir = tmp_path / "runs"
    check = cnnlab(other, "check", config, hide_tensorflow=True)
    assert check.returncode == 0, check.stderr
    assert cnnlab(other, "train", config, "--runs-dir", runs_dir, "-q", hide_tensorflow=True).returncode == 0
    (run_dir,) = runs_dir.iterdir()
    for args in (("evaluate", run_dir, "--split", "val"), ("predict", folder / "dog" / "0.png", "--run", run_dir),
                 ("visualize", run_dir), ("runs", "--runs-dir", runs_dir)):
        result = cnnlab(other, *args, hide_tensorflow=True)
        assert result.returncode == 0, (args, result.stderr)
    assert "tensorflow" not in json.loads((run_dir / run_files.ENV).read_text())
    hidden = cnnlab(other, "check", config, "--backend", "tensorflow", hide_tensorflow=True)
    assert (hidden.returncode, hidden.stderr) == (2, "Error: backend tensorflow: tensorflow is not installed; "
                                                     "install it with pip install tensorflow\n")
