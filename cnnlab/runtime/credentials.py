"""Passwords in database URLs: never written or shown by cnnlab, and found again in the environment when needed.

`--storage postgresql://user:PASSWORD@host/db` is how Optuna names a shared study, but the
sweep folder's sweep.json, every trial's env.json (the command line) and the MLflow
artifacts made of them are files that are copied, committed and uploaded. So a URL is
stored and shown with its password as `***`, and a process that must connect again (a
`--resume`, a worker) gets the password from where it was given, never from a file:

- the URL itself, on the command line (kept in memory only, and passed to workers through their pipe);
- `CNNLAB_STORAGE`, the full URL in the environment, which is also `--storage`'s default, so
  that the password need not be on a command line (shell history, `ps`) at all;
- for PostgreSQL, libpq's own `PGPASSWORD`, `PGPASSFILE` or `~/.pgpass`, which psycopg
  reads whenever the URL carries no password.
"""

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from cnnlab.errors import CnnlabError

MASK = "***"
STORAGE_VAR = "CNNLAB_STORAGE"
# scheme://user:PASSWORD@ where the password runs to the first @, as SQLAlchemy reads it ('/' and ':' included)
URL_PASSWORD = r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):{password}@"
PASSWORD_IN_TEXT = re.compile(URL_PASSWORD.format(password=r"[^@\s]*"))
PASSWORD_IN_ARGUMENT = re.compile(URL_PASSWORD.format(password=r"[^@]*"))  # one argument: a quoted password may hold spaces
QUERY_PASSWORD = re.compile(r"(?P<head>://[^\s]*?[?&](?:password|passwd)=)(?P<password>[^&#\s]*)", re.IGNORECASE)  # libpq's ?password=
QUERY_PARAMETER = re.compile(r"(?P<sep>[?&])(?:password|passwd)=[^&#\s]*&?", re.IGNORECASE)


def redact(text):
    """The text with the password of every URL in it replaced by ***: for files, messages and reports."""
    text = PASSWORD_IN_TEXT.sub(lambda m: f"{m['head']}:{MASK}@", str(text))
    return QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def redact_command(argv):
    """A command line as env.json records it, each argument redacted: --storage, --mlflow and --set values alike."""
    redacted = (PASSWORD_IN_ARGUMENT.sub(lambda m: f"{m['head']}:{MASK}@", str(arg)) for arg in argv)
    return " ".join(redact(arg) for arg in redacted)


def without_password(url):
    """The URL with no password at all (`user@host`), which libpq completes from PGPASSWORD or ~/.pgpass."""
    url = PASSWORD_IN_TEXT.sub(lambda m: f"{m['head']}@", url, count=1)
    return QUERY_PARAMETER.sub(lambda m: m["sep"], url).rstrip("?&")


def password_of(url):
    """The URL's password as written (*** where cnnlab replaced it), or None."""
    found = PASSWORD_IN_TEXT.search(url)
    if found:
        return found.group(0)[len(found["head"]) + 1:-1]
    found = QUERY_PASSWORD.search(url)
    return found["password"] if found else None


def storage_url(storage=None, environ=os.environ):
    """The study database a new sweep uses: `--storage`, else $CNNLAB_STORAGE, else None (the sweep folder's study.db)."""
    storage = storage or environ.get(STORAGE_VAR) or None
    return None if storage is None else connect_url(storage, environ)


def connect_url(url, environ=os.environ):
    """The URL to connect with: `url` where it holds its password, else completed from the environment.

    $CNNLAB_STORAGE counts where it names the same database (user, host, port, database);
    else a PostgreSQL URL goes without a password, for libpq to find one. A stored URL
    whose password was replaced by *** with neither available is a one-line error that
    names the variables to set.
    """
    password = password_of(url)
    if password is not None and password != MASK:
        return url
    full = environ.get(STORAGE_VAR)
    if full and without_password(full) == without_password(url):
        return full
    if password is None:
        return url
    if is_postgresql(url) and (environ.get("PGPASSWORD") is not None or pgpass_file(environ).is_file()):
        return without_password(url)
    also = ", or PGPASSWORD (or a line in ~/.pgpass)" if is_postgresql(url) else ""
    elsewhere = f" ({STORAGE_VAR} names another database)" if full else ""
    raise CnnlabError(f"the study database {redact(url)} needs its password, which cnnlab never stores: set {STORAGE_VAR} "
                      f"to its full URL{also}{elsewhere}")


def is_postgresql(url):
    return urlsplit(url).scheme.split("+")[0] in ("postgresql", "postgres")


def pgpass_file(environ):
    """Where libpq looks for passwords: $PGPASSFILE, else ~/.pgpass."""
    return Path(environ.get("PGPASSFILE") or Path(environ.get("HOME") or Path.home()) / ".pgpass")
