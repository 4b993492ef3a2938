"""A throwaway PostgreSQL server from the system's binaries, for tests of studies shared by several processes.

The server is a real one (initdb, pg_ctl) on a free port of 127.0.0.1, with a user that
logs in by password over TCP, as a sweep on another machine would; it is made for one
test and removed with everything it wrote. Start-up takes about a second: no fsync.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port

USER, PASSWORD, DATABASE = "cnnlab", "sweep-secret", "sweeps"
SERVER_OS_USER = "postgres"  # who runs the server when the tests run as root (Debian's package creates it)


def find_bin_dir():
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/VERSION/bin (newest first)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                            if Path(p).parent.name.isdigit() else 0, reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def server_account():
    """subprocess keyword arguments that run a command as the server's OS user: initdb refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        pytest.fail(f"the tests run as root and PostgreSQL refuses to: create the {SERVER_OS_USER!r} user "
                    "(apt-get install postgresql does) or run the tests as another user")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def postgres_server(password=PASSWORD):
    """Yields postgresql://USER:PASSWORD@127.0.0.1:PORT/DATABASE of a new server; stops and removes it afterwards.

    TCP logins need the password (scram-sha-256, from initdb --auth-host), so a client that
    has none is refused as on a real server; `password` may be one a test searches files for.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl not found: apt-get install postgresql")
    account = server_account()
    # Not in tmp_path: pytest makes /tmp/pytest-of-root readable by root alone, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if account:
        for path in (root, sockets):
            os.chown(path, account["user"], account["group"])

    def run(*args):
        done = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=root, capture_output=True, text=True, timeout=60, **account)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               f"{log.read_text() if log.is_file() else ''}")

    port = free_port()
    started = False
    try:
        # trust over the socket (the setup below), passwords over TCP (what the sweeps use)
        run("initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8")
        run("pg_ctl", "-D", data, "-l", log, "-w", "-t", "30", "start", "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        started = True
        for sql in (f"CREATE ROLE {USER} LOGIN PASSWORD '{password}'", f"CREATE DATABASE {DATABASE} OWNER {USER}"):
            run("psql", "-h", sockets, "-p", str(port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qc", sql)
        yield f"postgresql://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
