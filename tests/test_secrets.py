"""No password on disk: a sweep on a PostgreSQL study with a password writes it nowhere, and a resume finds it in the environment.

The server (tests/postgres.py) asks for the password over TCP (scram-sha-256), so every
connection the sweep, its workers and its resume make is a real login. The password is
one no file could hold by chance, and the check reads every byte of every file under the
test's folder: the runs, their env.json, the sweep's reports, the MLflow store and its artifacts.
"""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cnnlab.cli import main
from cnnlab.runtime.credentials import STORAGE_VAR, connect_url, redact, redact_command
from cnnlab.errors import CnnlabError
from conftest import REPO, assert_one_line_error
from postgres import postgres_server
from test_sweep import SWEPT, trial_rows

SECRET = "Zq7-nOt-0n-d1sk-4f9b"
# the variables that could hand a process the password: each test says which one it gives
PASSWORD_VARS = (STORAGE_VAR, "PGPASSWORD")


def clean_env(tmp_path, **given):
    """The environment without any password source but those `given` (no ~/.pgpass either)."""
    env = {key: value for key, value in os.environ.items() if key not in PASSWORD_VARS}
    env.update(PGPASSFILE=str(tmp_path / "no-pgpass"), **given)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def cnnlab(env, *args):
    """`cnnlab ARGS` in a process of its own, so that env.json records a real command line."""
    done = subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)
    return done.returncode, done.stdout + done.stderr


def files_holding(root, secret):
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not os.path.islink(path) and secret.encode() in open(path, "rb").read():
                found.append(path)
    return found


def test_a_sweep_with_workers_a_resume_and_mlflow_writes_the_password_nowhere(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(SWEPT)
    runs_dir = tmp_path / "runs"
    with postgres_server(password=SECRET) as url:
        code, output = cnnlab(clean_env(tmp_path), "sweep", config, "--storage", url, "--runs-dir", runs_dir,
                              "--trials", "2", "--jobs", "2", "--epochs", "1", "--mlflow")
        assert code == 0, output
        (sweep_dir,) = runs_dir.glob("sweep-*")
        code, resumed = cnnlab(clean_env(tmp_path, PGPASSWORD=SECRET), "sweep", "--resume", sweep_dir, "--trials", "3")
        assert code == 0, resumed
    assert SECRET not in output + resumed
    assert files_holding(tmp_path, SECRET) == []

    redacted = url.replace(f":{SECRET}@", ":***@")
    assert json.loads((sweep_dir / "sweep.json").read_text())["storage"] == redacted
    rows = trial_rows(sweep_dir)
    assert [row["state"] for row in rows] == ["complete"] * 3  # the resume did train on the study
    env_files = list(runs_dir.rglob("env.json"))
    logged = [path for path in env_files if "mlartifacts" in path.parts]
    assert len(logged) == 3, env_files  # each trial's env.json is an MLflow artifact too, and was searched
    for path in env_files:
        command = json.loads(path.read_text())["command"]
        assert f"--storage {redacted}" in command or "--resume" in command, command


def test_a_resume_without_the_password_in_the_environment_names_the_variables_to_set(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(SWEPT)
    with postgres_server(password=SECRET) as url:
        made = CliRunner().invoke(main, ["sweep", str(config), "--runs-dir", str(tmp_path / "runs"), "--trials", "1", "--epochs", "1"],
                                  env={STORAGE_VAR: url, "PGPASSWORD": None, "PGPASSFILE": str(tmp_path / "no-pgpass")})
        assert made.exit_code == 0, made.output  # the study went to $CNNLAB_STORAGE, the default of --storage
        (sweep_dir,) = (tmp_path / "runs").glob("sweep-*")
        resumed = CliRunner().invoke(main, ["sweep", "--resume", str(sweep_dir), "--trials", "2"],
                                     env={STORAGE_VAR: None, "PGPASSWORD": None, "PGPASSFILE": str(tmp_path / "no-pgpass")})
    redacted = url.replace(f":{SECRET}@", ":***@")
    assert_one_line_error(resumed, f"the study database {redacted} needs its password, which cnnlab never stores: "
                                   f"set {STORAGE_VAR} to its full URL, or PGPASSWORD (or a line in ~/.pgpass)", exact=True)
    assert len(trial_rows(sweep_dir)) == 1
    assert files_holding(tmp_path, SECRET) == []


def test_redact_hides_the_password_of_every_url_in_a_text():
    assert redact("a postgresql://me:pa/ss:w@db.example:5432/s and mysql+pymysql://root:x@h/db?ssl=1") == \
        "a postgresql://me:***@db.example:5432/s and mysql+pymysql://root:***@h/db?ssl=1"
    assert redact("postgresql://h/db?user=me&password=hunter2&sslmode=require") == "postgresql://h/db?user=me&password=***&sslmode=require"
    assert redact("sqlite:////runs/study.db and http://127.0.0.1:5000") == "sqlite:////runs/study.db and http://127.0.0.1:5000"


def test_a_command_line_is_recorded_without_any_password():
    argv = ["cnnlab", "sweep", "c.yaml", "--storage", "postgresql://me:two words@h/db", "--set", "tracking.mlflow=http://me:pw@h:5000"]
    assert redact_command(argv) == "cnnlab sweep c.yaml --storage postgresql://me:***@h/db --set tracking.mlflow=http://me:***@h:5000"


def test_a_stored_url_takes_its_password_from_cnnlab_storage_naming_the_same_database():
    stored = "postgresql://me:***@h:5432/db"
    assert connect_url(stored, {STORAGE_VAR: "postgresql://me:pw@h:5432/db"}) == "postgresql://me:pw@h:5432/db"


def test_a_stored_postgresql_url_goes_without_a_password_where_libpq_has_one(tmp_path):
    stored = "postgresql://me:***@h:5432/db"
    assert connect_url(stored, {"PGPASSWORD": "pw"}) == "postgresql://me@h:5432/db"
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("h:5432:db:me:pw\n")
    assert connect_url(stored, {"PGPASSFILE": str(pgpass)}) == "postgresql://me@h:5432/db"


def test_cnnlab_storage_naming_another_database_is_said_so():
    stored = "mysql://me:***@h/db"
    with pytest.raises(CnnlabError) as raised:
        connect_url(stored, {STORAGE_VAR: "mysql://me:pw@other/db"})
    assert str(raised.value) == (f"the study database {stored} needs its password, which cnnlab never stores: set {STORAGE_VAR} "
                                 f"to its full URL ({STORAGE_VAR} names another database)")
