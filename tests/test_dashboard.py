"""The sweep's study opens in optuna-dashboard (the `dashboard` extra): a real server on a loopback port, read through its JSON API."""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from test_sweep import SWEPT, only_sweep, sweep, trial_rows

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e \".[dashboard]\")")


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_json(process, log, url, seconds=30):
    """The server's answer at `url` once it listens; fails if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"optuna-dashboard exited with {process.returncode}: {log.read_text()}"
        try:
            return get_json(url)
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"optuna-dashboard did not answer at {url} within {seconds} s"
            time.sleep(0.2)


def test_optuna_dashboard_lists_the_sweeps_study_with_its_trials(tmp_path):
    result = sweep(tmp_path, SWEPT)
    assert result.exit_code == 0, result.output
    sweep_dir = only_sweep(tmp_path)
    completed = sum(row["state"] == "complete" for row in trial_rows(sweep_dir))

    # the console script pip installs beside this interpreter, as a user runs it
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    port = free_port()
    log = tmp_path / "dashboard.log"  # a file, not a pipe: a server that logs each request never blocks on it
    with open(log, "w") as out:
        process = subprocess.Popen([str(dashboard), f"sqlite:///{sweep_dir / 'study.db'}", "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        (study,) = wait_for_json(process, log, f"{base}/api/studies")["study_summaries"]
        assert study["study_name"] == sweep_dir.name  # the study is named after its sweep folder
        assert study["directions"] == ["minimize"]  # val_loss, the checkpoint's monitor
        detail = get_json(f"{base}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == len(trial_rows(sweep_dir))
        assert sum(trial["state"] == "Complete" for trial in detail["trials"]) == completed == 3
        assert {param["name"] for param in detail["trials"][0]["params"]} == {
            "compile.optimizer.learning_rate", "model.layers[0].Conv2D.filters"}
    finally:
        process.kill()
        process.wait(timeout=10)
