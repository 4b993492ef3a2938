"""The cores a process may use: one budget for its batch split, its TensorFlow threads and its workers' shares.

A process may use the cores its affinity allows (`taskset`, a container's cpuset), or
fewer where whoever started it gave it a share in CNNLAB_CORES: `compare-optimizers
--jobs N` starts each worker with its share set there, so that the worker's batch split
and thread counts stay inside that share instead of each reaching for the whole machine.

The share travels as an environment variable, as OMP_NUM_THREADS does, because it has to
reach a spawned process (and whatever that one starts) before TensorFlow starts there;
a value set in a module would have to be passed along by hand at every start.
This module imports no TensorFlow, so that a parent that only hands out shares stays light.
"""

import os

from cnnlab.errors import CnnlabError, short_repr

CORES_VARIABLE = "CNNLAB_CORES"


def usable_cores():
    """The process's core budget: the cores its affinity allows, or fewer where CNNLAB_CORES says so."""
    allowed = affinity_cores()
    given = os.environ.get(CORES_VARIABLE, "").strip()
    if not given:
        return allowed
    if not given.isdigit() or int(given) < 1:
        # not a ConfigError: that would name the config file, and the fix is in the environment
        raise CnnlabError(f"{CORES_VARIABLE}: expected a whole number of cores, at least 1 (unset it to use every core "
                          f"the process may use); received {short_repr(given)}")
    return min(int(given), allowed)  # a share cannot hand out cores the affinity does not allow


def affinity_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def give_cores(cores):
    """Makes `cores` this process's budget, for itself and whatever it starts; call it before TensorFlow starts."""
    os.environ[CORES_VARIABLE] = str(cores)
    os.environ["OMP_NUM_THREADS"] = str(cores)  # OpenMP code (NumPy's BLAS) keeps to the same share
