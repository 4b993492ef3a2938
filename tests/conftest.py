"""Factories for tests: tiny configs and the paths of the shipped ones."""

import os
import socket
from pathlib import Path
from textwrap import dedent

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CNNLAB_OFFLINE", "1")  # tests never download

REPO = Path(__file__).resolve().parent.parent
BACKEND = os.environ.get("KERAS_BACKEND") or "tensorflow"  # what this pytest process runs on (README, "Run the tests")


# The files whose tests take longest, longest first, as `--durations` measured them on 2 cores: under
# `-n 2 --dist loadfile` they start first, so that the two workers end together instead of one running a long file
# alone at the end (pytest-xdist would otherwise start the files with the most tests first, and these have few).
LONGEST_FIRST = ("test_backends.py", "test_distribute.py", "test_transfer.py", "test_sweep.py", "test_resume_state.py",
                 "test_tensorboard.py", "test_sweep_failures.py", "test_tracking.py", "test_secrets.py",
                 "test_resume.py", "test_workers.py", "test_cv.py", "test_compare.py")


def pytest_configure(config):
    config.pluginmanager.import_plugin("wholly_skipped")  # in CI, a test module skipped whole fails the run
    config.option.loadscopereorder = False  # pytest-xdist's --no-loadscope-reorder: keep LONGEST_FIRST's order


def pytest_collection_modifyitems(config, items):
    """The longest files first (LONGEST_FIRST; the order within a file is kept), and tests marked tensorflow_only
    (cnnlab's own TensorFlow loop, tf.distribute, tf.data) skipped on JAX and PyTorch."""
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow's own; this run's Keras backend is {BACKEND}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
CONFIGS = REPO / "configs"

TINY_DIGITS = """\
name: tiny
seed: 7
data:
  source: digits
  test_split: 0.2
model:
  input_shape: [8, 8, 1]
  layers:
    - Conv2D: {filters: 4, kernel_size: 3, activation: relu, padding: same}
    - MaxPooling2D: {pool_size: 2}
    - Flatten: {}
    - Dense: {units: 10, activation: softmax}
train:
  epochs: 2
  batch_size: 64
  validation_split: 0.2
"""


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now: for a server a test starts, or one that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args):
    """`cnnlab ARGS...` through click's CliRunner, every argument as a string."""
    from cnnlab.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, expected, exact=False):
    """How every bad input must end: exit code 2 and one line `Error: ...` (starting with `expected`), no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    if exact:
        assert lines[0] == f"Error: {expected}"
    else:
        assert lines[0].startswith(f"Error: {expected}"), lines[0]
    assert "Traceback" not in result.output


def train_config(config, runs_dir, *args, check=True):
    """`cnnlab train CONFIG --runs-dir RUNS_DIR -q ARGS...`: the one way tests train a tiny config.

    Returns click's result with `run_dir` set to the run folder this call made (None where it
    made none); with `check`, a failed training fails the test with its output.
    """
    from cnnlab.rundir.files import is_run_dir

    runs_dir = Path(runs_dir)
    before = set(runs_dir.iterdir()) if runs_dir.is_dir() else set()
    result = run_cli("train", config, "--runs-dir", runs_dir, "-q", *args)
    if check:
        assert result.exit_code == 0, result.output
    made = [path for path in set(runs_dir.iterdir()) - before if is_run_dir(path)] if runs_dir.is_dir() else []
    result.run_dir = made[0] if len(made) == 1 else None
    return result


def write_and_train(root, text, *args, check=True):
    """Writes `text` as root/config.yaml and trains it into root/runs (`train_config`)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(text)
    return train_config(config, root / "runs", *args, check=check)


def train_run(root, text, *args):
    """Writes `text` as root/config.yaml, trains it quietly into root/runs and returns the run folder."""
    return write_and_train(root, text, *args).run_dir


def write_photo_folder(root, per_class=12, size=16, seed=0):
    """Two classes of small RGB "photos": a bar across (`across`) or down (`down`) the image, in a random colour
    and place on a noisy background of another colour, saved as PNG under root/<class>/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in ("across", "down"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, 3) * 0.5 + rng.normal(0, 20, (size, size, 3))
            at = rng.integers(2, size - 4)
            bar = (slice(at, at + 3), slice(None)) if name == "across" else (slice(None), slice(at, at + 3))
            image[bar] = rng.integers(128, 256, 3)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    """A folder of two class sub-folders of 16x16 RGB PNG photos made for the test (write_photo_folder)."""
    return write_photo_folder(tmp_path / "photos")


@pytest.fixture
def write_config(tmp_path):
    """Writes YAML text to a file in tmp_path and returns its path."""

    def write(text, name="config.yaml"):
        path = tmp_path / name
        path.write_text(dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def tiny_config(write_config):
    """A digits config that trains in a few seconds."""
    return write_config(TINY_DIGITS, name="tiny.yaml")


@pytest.fixture
def postgres_url():
    """postgresql://... of a PostgreSQL server started for this test from the system's binaries (skipped without them)."""
    from postgres import postgres_server

    with postgres_server() as url:
        yield url
