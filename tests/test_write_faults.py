"""Real write faults: a runs folder the user cannot write, and a write that fails mid-training."""

import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

from cnnlab.rundir import files as run_files

from conftest import TINY_DIGITS

# Root ignores file permissions; setpriv (util-linux) drops that power for the child process only.
DROP_ROOT_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def cnnlab(args, cwd, preexec_fn=None, prefix=()):
    env = {**os.environ, "CNNLAB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*prefix, sys.executable, "-m", "cnnlab.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, preexec_fn=preexec_fn, timeout=300)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv to meet a read-only folder")
def test_a_read_only_runs_folder_is_one_line_before_training(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_DIGITS)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    runs_dir.chmod(0o555)
    prefix = DROP_ROOT_OVERRIDE if os.geteuid() == 0 else ()
    result = cnnlab(["train", "tiny.yaml", "--runs-dir", "runs", "-q"], tmp_path, prefix=prefix)
    runs_dir.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "Error: cannot create a run folder in runs: Permission denied"
    assert "Traceback" not in result.stderr
    assert list(runs_dir.iterdir()) == []


def limit_file_size():
    """Files may grow to 8 KiB: enough for config and history, too little for a saved model."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an error instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


def test_a_write_that_fails_during_training_marks_the_run_failed(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_DIGITS)
    result = cnnlab(["train", "tiny.yaml", "--runs-dir", "runs", "-q"], tmp_path, preexec_fn=limit_file_size)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: training failed in runs/tiny-") and "File too large" in last
    assert "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    status = run_files.read_status(run_dir)
    assert status.state == "failed" and "File too large" in status.reason
    assert not (run_dir / "best.keras").exists()  # nothing half-written where the model should be
