"""Job functions for tests/test_workers.py: importable by the pool's spawned workers (tests/ is on their PYTHONPATH)."""

import os
import sys
import time
from pathlib import Path


def report(job):
    """What the worker looks like from inside: its pid, its core share and whether TensorFlow started before the job.

    A job with a `pid_file` writes the worker's pid there and waits to be killed instead.
    """
    if "pid_file" in job:
        Path(job["pid_file"]).write_text(str(os.getpid()))
        time.sleep(600)
    time.sleep(job.get("sleep", 0))
    return {"job": job["n"], "pid": os.getpid(), "cores": os.environ.get("CNNLAB_CORES"),
            "tensorflow": "tensorflow" in sys.modules}


def fail(job):
    raise ValueError(f"job {job['n']} cannot be done")
