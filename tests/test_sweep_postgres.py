"""Two machines, one study: `cnnlab sweep --storage postgresql://... --study NAME` on a real PostgreSQL server.

Each "machine" is a separate `cnnlab sweep` process with its own runs folder, as on two
hosts that share nothing but the database; the server is started by the `postgres_url`
fixture (tests/postgres.py) and the test is skipped only where PostgreSQL is not installed.
"""

import os
import subprocess
import sys
from pathlib import Path

import optuna

from cnnlab.rundir import trained
from conftest import REPO, assert_one_line_error, run_cli
from test_sweep import SWEPT, trial_rows

STUDY = "tiny-digits"


def start_sweep(config, storage, runs_dir, *args):
    """`cnnlab sweep` in a process of its own (a machine of its own), this checkout's cnnlab first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "cnnlab.cli", "sweep", str(config), "--storage", storage, "--study", STUDY,
               "--runs-dir", str(runs_dir), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write_config(root):
    config = root / "config.yaml"
    config.write_text(SWEPT)
    return config


def test_two_machines_join_one_study_each_trial_a_run_folder_on_the_machine_that_trained_it(tmp_path, postgres_url):
    config = write_config(tmp_path)
    machines = [tmp_path / "machine1", tmp_path / "machine2"]
    processes = [start_sweep(config, postgres_url, machine / "runs", "--trials", "4", "--epochs", "2") for machine in machines]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n\n".join(outputs)
    assert not any("ExperimentalWarning" in output for output in outputs), "\n\n".join(outputs)

    study = optuna.load_study(storage=postgres_url, study_name=STUDY)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == 4  # a trial that starts when all 4 are taken gives way (study.claim_slot)
    trained_on = {}  # machine -> its trials' numbers
    for trial in finished:
        run_dir = Path(trial.user_attrs["run_dir"])
        (machine,) = [machine for machine in machines if run_dir.is_relative_to(machine)]
        trained_on.setdefault(machine, []).append(trial.number)
        assert trained.load_trained_run(run_dir).config.name == f"tiny-trial{trial.number:03d}"
    assert sorted(trained_on) == machines, trained_on  # both machines trained trials of the one study
    sampled = [tuple(sorted(trial.params.items())) for trial in finished]
    assert len(set(sampled)) == len(sampled), sampled  # the machines did not train the same values twice
    for machine in machines:  # each machine's sweep folder reports the whole study, not only its own trials
        (sweep_dir,) = (machine / "runs").glob("sweep-*")
        assert {int(row["number"]) for row in trial_rows(sweep_dir)} >= {trial.number for trial in finished}


def test_the_same_study_name_with_another_search_space_is_refused_before_a_sweep_folder_is_made(tmp_path, postgres_url):
    config = write_config(tmp_path)
    first = run_cli("sweep", config, "--storage", postgres_url, "--study", STUDY, "--runs-dir", tmp_path / "first",
                    "--trials", "1", "--epochs", "1")
    assert first.exit_code == 0, first.output

    other = run_cli("sweep", config, "--storage", postgres_url, "--study", STUDY, "--runs-dir", tmp_path / "other",
                    "--param", "model.layers[0].Conv2D.filters={int: [2, 4]}")
    redacted = postgres_url.replace(":sweep-secret@", ":***@")
    assert_one_line_error(other, f"{config}: sweep: the study '{STUDY}' in {redacted} was made with another search space")
    assert not (tmp_path / "other").exists()


def test_a_wrong_password_is_one_line_without_the_password(tmp_path, postgres_url):
    config = write_config(tmp_path)
    wrong = postgres_url.replace(":sweep-secret@", ":not-the-password@")
    result = run_cli("sweep", config, "--storage", wrong, "--study", STUDY, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(result, f"--storage {postgres_url.replace(':sweep-secret@', ':***@')}: cannot open the study database")
    assert "not-the-password" not in result.output
    assert not (tmp_path / "runs").exists()
