"""One process trains a run folder at a time: the lock file holding its PID, and whether that process still lives."""

import os
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import RunError
from cnnlab.rundir.files import COMPLETED, LOCK, read_status


@contextmanager
def training_lock(run_dir):
    """Held while a process trains the run, so that a second `train --resume` cannot write into it too.

    An advisory lock (flock) on a file in the run folder: the kernel drops it when its
    process ends, however it ends, so a killed run can be resumed at once, while a
    running one names its PID to whoever else tries. A completed run loses the file;
    so whoever takes the lock must read the run's status after taking it.
    """
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot create {path}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise RunError(f"{run_dir} is being trained by process {owner} (it holds {path}); "
                           "wait for it to end or stop it, then resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
        if read_status(run_dir).state == COMPLETED:  # nothing more will train here; whoever waits re-reads the status
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing releases the lock


def process_alive(pid):
    """Whether a process of this machine is still there (a killed export's, a sweep trial's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
