"""MLflow tracking as a user meets it: `--mlflow` on train, read back with MLflow's own client.

Real trainings into real stores: an SQLite file, a `mlflow server` started here, a closed
port for a server that is down; nothing of Keras or MLflow is replaced.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow", reason='MLflow is the optional extra: pip install -e ".[mlflow]"')

from cnnlab.rundir import files as run_files, listing, trained  # noqa: E402
from cnnlab.tracking.mlflow import store_in_use  # noqa: E402
from conftest import TINY_DIGITS, assert_one_line_error, free_port, run_cli  # noqa: E402
from test_resume_state import CtrlCAfter, with_extra_callbacks  # noqa: E402


def train_tracked(root, *args, text=TINY_DIGITS):
    """`cnnlab train root/config.yaml --runs-dir root/runs -q ARGS...`: the result and the run folder."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yaml"
    config.write_text(text)
    result = run_cli("train", config, "--runs-dir", root / "runs", "-q", *args)
    made = [path for path in (root / "runs").iterdir() if run_files.is_run_dir(path)] if (root / "runs").is_dir() else []
    return result, (made[0] if len(made) == 1 else None)


def run_id_of(run_dir):
    return run_files.read_json(run_dir / run_files.TRACKING)["run_id"]


def history_of_metric(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny run trained with --mlflow into an SQLite store: (run folder, client, MLflow run id)."""
    root = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    (root / "store").mkdir()
    result, run_dir = train_tracked(root, "--mlflow", uri)
    assert result.exit_code == 0, result.output
    return run_dir, mlflow.MlflowClient(tracking_uri=uri), run_id_of(run_dir)


def test_the_run_is_an_mlflow_run_named_after_its_folder(tracked):
    run_dir, client, run_id = tracked
    run = client.get_run(run_id)
    assert run.info.run_name == run_dir.name
    assert run.info.status == "FINISHED"
    assert run.data.tags["cnnlab.run_dir"] == str(run_dir.resolve())
    assert run.data.tags["cnnlab.backend"] == run_files.read_backend(run_dir)
    assert client.get_experiment(run.info.experiment_id).name == "tiny"  # the config's name


def test_params_are_the_resolved_config_setting_by_setting(tracked):
    _, client, run_id = tracked
    params = client.get_run(run_id).data.params
    assert params["train.batch_size"] == "64"
    assert params["model.layers.0.Conv2D.filters"] == "4"  # model.layers[0].Conv2D.filters: MLflow refuses brackets
    assert params["model.layers.0.Conv2D.kernel_size"] == "3"
    assert params["compile.optimizer.name"] == "adam"
    assert params["train.steps_per_execution"].isdigit()  # the number `auto` became, as config.yaml records it
    assert not any(key.startswith(("sweep", "tracking")) for key in params)


def test_every_epoch_is_logged_as_history_csv_has_it(tracked):
    run_dir, client, run_id = tracked
    history = run_files.read_history(run_dir / run_files.HISTORY)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert history_of_metric(client, run_id, key) == list(enumerate(history[key])), key
    assert "time_s" not in client.get_run(run_id).data.metrics


def test_test_metrics_and_the_run_folder_are_logged(tracked):
    run_dir, client, run_id = tracked
    metrics = run_files.read_json(run_dir / run_files.METRICS)
    logged = client.get_run(run_id).data.metrics
    assert logged["test_accuracy"] == metrics["test"]["accuracy"]
    assert logged["test_loss"] == metrics["test"]["loss"]
    assert logged["best_val_loss"] == metrics["best"]["val_loss"]
    assert logged["best_epoch"] == metrics["best_epoch"]
    names = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"config.yaml", "history.csv", "metrics.json", "best.keras", "loss.png", "env.json", "status"} <= names
    assert not names & {run_files.BACKUP_DIR, run_files.TRACKING, run_files.LOCK}


def test_the_logged_model_loads_and_predicts_like_best_keras(tracked):
    run_dir, client, run_id = tracked
    with store_in_use(client.tracking_uri):  # `runs:/` is read from the process's tracking URI
        logged = mlflow.keras.load_model(f"runs:/{run_id}/model")
    images = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    best = trained.load_model(run_dir / run_files.MODEL)
    np.testing.assert_allclose(logged.predict(images, verbose=0), best.predict(images, verbose=0), rtol=1e-6, atol=1e-6)


@pytest.fixture
def mlflow_server(tmp_path):
    """http://127.0.0.1:PORT of a `mlflow server` on an SQLite store in tmp_path, stopped after the test."""
    executable = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    if not Path(executable).is_file():
        pytest.skip("the mlflow executable is not installed beside this Python")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([executable, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "server-artifacts")],
                              stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)  # the server's own process group: its workers too
        server.wait(timeout=30)
        log.close()


def test_a_run_is_logged_to_a_tracking_server(tmp_path, mlflow_server):
    result, run_dir = train_tracked(tmp_path, "--mlflow", mlflow_server)
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id_of(run_dir))
    assert run.info.status == "FINISHED"
    history = run_files.read_history(run_dir / run_files.HISTORY)
    assert history_of_metric(client, run.info.run_id, "val_loss") == list(enumerate(history["val_loss"]))
    assert "best.keras" in {artifact.path for artifact in client.list_artifacts(run.info.run_id)}


def test_a_server_that_is_down_costs_a_line_not_the_run_and_track_logs_it_later(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result, run_dir = train_tracked(tmp_path, "--mlflow", down)
    assert time.monotonic() - started < 60  # MLflow's HTTP client alone would retry for minutes
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    warnings = [line for line in lines if line.startswith("Warning: ")]
    assert len(warnings) == 1 and down in warnings[0], result.output
    assert lines[-1].startswith(f"Error: MLflow tracking at {down} failed: "), lines[-1]
    assert lines[-1].endswith(f"the run is complete in {run_dir}: log it with cnnlab track {run_dir} --mlflow {down}")
    assert any(line.startswith("Test accuracy: ") for line in lines)  # the normal result came first
    assert run_files.read_status(run_dir).state == run_files.COMPLETED
    assert all((run_dir / name).is_file() for name in (run_files.MODEL, run_files.HISTORY, run_files.METRICS))

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logged = run_cli("track", run_dir, "--mlflow", store)
    assert logged.exit_code == 0, logged.output
    client = mlflow.MlflowClient(tracking_uri=store)
    run = client.get_run(run_id_of(run_dir))
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    history = run_files.read_history(run_dir / run_files.HISTORY)
    assert history_of_metric(client, run.info.run_id, "loss") == list(enumerate(history["loss"]))
    assert run.data.metrics["test_accuracy"] == run_files.read_json(run_dir / run_files.METRICS)["test"]["accuracy"]
    assert run.data.params["train.batch_size"] == "64"
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the working directory

    again = run_cli("track", run_dir, "--mlflow", store)
    assert again.exit_code == 0 and again.output.strip().endswith("(already logged)"), again.output
    assert history_of_metric(client, run.info.run_id, "loss") == list(enumerate(history["loss"]))


def test_a_resumed_run_continues_its_mlflow_run_logging_each_epoch_once(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with_extra_callbacks(monkeypatch, CtrlCAfter(2))  # after the run's own callbacks wrote epoch 2, before MLflow logged it
    result, run_dir = train_tracked(tmp_path, "--mlflow", store, text=TINY_DIGITS.replace("epochs: 2", "epochs: 3"))
    assert result.exit_code == 130, result.output
    client = mlflow.MlflowClient(tracking_uri=store)
    run_id = run_id_of(run_dir)
    assert client.get_run(run_id).info.status == "KILLED"
    monkeypatch.undo()

    resumed = run_cli("train", "--resume", run_dir, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert run_id_of(run_dir) == run_id
    history = run_files.read_history(run_dir / run_files.HISTORY)
    assert history["epoch"] == [1, 2, 3]
    for key in ("loss", "val_accuracy", "learning_rate"):
        assert history_of_metric(client, run_id, key) == list(enumerate(history[key])), key
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1


def compare_tracked(tmp_path, uri, *args):
    """`cnnlab compare-optimizers` of sgd and adam, 1 epoch, with --mlflow URI: the result and the comparison's folder."""
    config = tmp_path / "config.yaml"
    config.write_text(TINY_DIGITS.replace("epochs: 2", "epochs: 1"))
    result = run_cli("compare-optimizers", config, "-o", "sgd", "-o", "adam", "--runs-dir", tmp_path / "runs", "--mlflow", uri,
                     *args)
    (compare_dir,) = (tmp_path / "runs").iterdir()
    return result, compare_dir


def test_each_run_of_a_comparison_is_an_mlflow_run_of_one_experiment_tagged_with_its_folder(tmp_path):
    # two worker processes on a new SQLite store: its tables and the experiment are made once, before they start
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result, compare_dir = compare_tracked(tmp_path, store, "--jobs", "2")
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=store)
    found = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(run.info.run_name.split("-s7-")[0] for run in found) == ["adam", "sgd"]
    assert {run.data.tags["cnnlab.group"] for run in found} == {compare_dir.name}
    assert {run.data.params["compile.optimizer.name"] for run in found} == {"sgd", "adam"}


def test_a_comparison_whose_server_is_down_trains_every_run_and_fails_naming_them(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    result, compare_dir = compare_tracked(tmp_path, down)
    assert result.exit_code == 2, result.output
    children = listing.runs_in_group(compare_dir, "compare")
    assert len(children) == 2 and all(run_files.read_status(run_dir).state == run_files.COMPLETED for run_dir in children)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: 2 of the runs in {compare_dir} could not be logged (MLflow tracking at {down} failed")
    assert all(str(run_dir) in last for run_dir in children) and "cnnlab track" in last


def test_the_trials_of_a_sweep_share_the_store_beside_the_runs(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(TINY_DIGITS.replace("epochs: 2", "epochs: 1") + """\
sweep:
  trials: 1
  params:
    train.batch_size: {choice: [32, 64]}
""")
    result = run_cli("sweep", config, "--runs-dir", tmp_path / "runs", "--mlflow")
    assert result.exit_code == 0, result.output
    (sweep_dir,) = [path for path in (tmp_path / "runs").iterdir() if path.name.startswith("sweep-")]
    assert not (sweep_dir / run_files.MLFLOW_DB).exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / run_files.MLFLOW_DB}")
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.info.run_name.startswith("tiny-trial000-") and run.data.tags["cnnlab.group"] == sweep_dir.name


def test_mlflow_alone_keeps_the_store_beside_the_runs(tmp_path):
    result, run_dir = train_tracked(tmp_path, "--mlflow")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / run_files.MLFLOW_DB).is_file()
    assert (tmp_path / "runs" / run_files.MLFLOW_ARTIFACTS).is_dir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / run_files.MLFLOW_DB}")
    assert client.get_run(run_id_of(run_dir)).info.status == "FINISHED"
    listed = run_cli("runs", "--runs-dir", tmp_path / "runs")
    assert listed.exit_code == 0 and run_dir.name in listed.output and "broken" not in listed.output


@pytest.mark.parametrize("args, expected", [
    (["--mlflow", "ftp://example.org/mlflow"], "tracking.mlflow: expected true, null or an MLflow tracking URI"),
    (["--set", "tracking.mlflow=3"], "tracking.mlflow: expected true, null or an MLflow tracking URI"),
    (["--set", "tracking.experiment=[a]"], "tracking.experiment: expected an MLflow experiment name"),
    (["--set", "tracking.mlfow=true"], "tracking.mlfow: unknown key (did you mean mlflow?)"),
    (["--mlflow", "postgresql://cnnlab:secret@127.0.0.1/mlflow"], "tracking.mlflow: holds a password, which every run folder's"),
])
def test_a_bad_tracking_setting_is_one_line(tmp_path, args, expected):
    result, run_dir = train_tracked(tmp_path, *args)
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: {expected}")
    assert run_dir is None


def test_without_mlflow_installed_the_config_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed: `import mlflow` fails
    result, run_dir = train_tracked(tmp_path, "--mlflow")
    assert_one_line_error(result, f"{tmp_path / 'config.yaml'}: tracking.mlflow: needs MLflow, which is not installed: "
                                  'pip install -e ".[mlflow]"', exact=True)
    assert run_dir is None
