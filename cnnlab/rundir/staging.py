"""Export staging: files are built and checked in a hidden folder named after their process, then published at once."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import RunError
from cnnlab.rundir.files import EXPORT_DIR, EXPORT_STAGING
from cnnlab.rundir.lock import process_alive


def export_folder(run_dir, output=None):
    """Where `cnnlab export` writes: --output when given, else <run>/export/."""
    return Path(output) if output is not None else Path(run_dir) / EXPORT_DIR


@contextmanager
def export_staging(folder):
    """A hidden folder inside `folder` in which an export is built and checked, removed afterwards whatever happens.

    Inside the export folder, so that publishing is a rename on one file system. `folder` is
    created where missing, and removed again where this made it and nothing was published.
    """
    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(folder)
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=f"{EXPORT_STAGING}{os.getpid()}-"))
    except OSError as exc:
        raise RunError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            try:
                folder.rmdir()  # only where it is empty: nothing was published
            except OSError:
                pass


def remove_abandoned_staging(folder):
    """Removes the staging folders of exports whose process is gone: one killed mid-export (SIGKILL, a power cut)
    could not remove its own. Each is named after its process (.staging-PID-…), so another export's is left alone."""
    for path in Path(folder).glob(f"{EXPORT_STAGING}*"):
        pid = path.name[len(EXPORT_STAGING):].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def publish(staged, target, staging):
    """Moves a finished, checked file or folder from the staging folder to `target`, replacing an older one whole.

    A file is renamed over the old one (atomic). A folder (a SavedModel) cannot be renamed
    over a folder, so the old one is first moved into `staging` (removed with it) and the
    new one renamed into place; every file is flushed to disk before either rename.
    """
    staged, target = Path(staged), Path(target)
    try:
        for path in ([staged] if staged.is_file() else sorted(p for p in staged.rglob("*") if p.is_file())):
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        if staged.is_dir() and target.exists():
            os.replace(target, Path(staging) / f"replaced-{target.name}")
        os.replace(staged, target)
    except OSError as exc:
        raise RunError(f"cannot write {target}: {exc.strerror or exc}") from exc


def size_in_bytes(path):
    """A file's size, or the total of the files in a folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
