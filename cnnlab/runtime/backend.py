"""The only module that knows which Keras backend runs: TensorFlow, JAX or PyTorch.

Keras reads `KERAS_BACKEND` once, when it is first imported, so a process has one
backend for its whole life. The CLI chooses it here before anything imports Keras
(`--backend`, else `KERAS_BACKEND`, else TensorFlow); spawned worker processes inherit
the variable. Everything else in cnnlab asks this module what runs (`name`,
`is_tensorflow`) and for what differs between backends (versions, devices, threads),
and otherwise computes through `keras.ops`, NumPy and Pillow. TensorFlow is imported
only where it is the backend or where a feature is its own (tf.distribute, tf.data
under TensorFlow), so a machine with only JAX or PyTorch runs every command.
"""

import atexit
import gc
import importlib.util
import os
import sys
from importlib import metadata

from cnnlab.errors import CnnlabError, short_repr

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT = "tensorflow"
ENV_VAR = "KERAS_BACKEND"
# The distribution whose version env.json records, and the extra that installs it (pyproject.toml)
DISTRIBUTIONS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# CPU instructions with which a CPU computes bfloat16 natively (Linux /proc/cpuinfo flags)
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class BackendError(CnnlabError):
    """A backend that is unknown, not installed, or not the one this process already runs."""


def requested(option=None):
    """The backend a command asks for: `option` (--backend), else $KERAS_BACKEND, else TensorFlow; checked by name."""
    wanted = option or os.environ.get(ENV_VAR) or DEFAULT
    if wanted not in BACKENDS:
        where = "--backend" if option else ENV_VAR
        raise BackendError(f"{where}: expected one of {', '.join(BACKENDS)}, received {short_repr(wanted)}")
    return wanted


def select(wanted):
    """Makes `wanted` the backend of this process (before Keras is imported), or says in one line why it cannot be."""
    wanted = requested(wanted)
    if "keras" in sys.modules:
        running = name()
        if running != wanted:
            raise BackendError(f"Keras already runs on {running} in this process and cannot switch to {wanted}; "
                               f"start a new process with --backend {wanted} (or {ENV_VAR}={wanted})")
        return wanted
    if importlib.util.find_spec(DISTRIBUTIONS[wanted]) is None:
        how = "pip install tensorflow" if wanted == "tensorflow" else f"pip install -e \".[{wanted}]\" (in cnnlab's folder)"
        raise BackendError(f"backend {wanted}: {DISTRIBUTIONS[wanted]} is not installed; install it with {how}")
    os.environ[ENV_VAR] = wanted
    return wanted


def start(show_logs=False):
    """Imports Keras on the selected backend; TensorFlow without its start-up log lines unless `show_logs`."""
    exit_quickly()
    if requested() == "tensorflow":
        from cnnlab.runtime.tf_logs import import_tensorflow

        import_tensorflow(show_logs=show_logs)
    import keras  # noqa: F401

    if name() != "tensorflow":
        from cnnlab.runtime import keras_compat

        keras_compat.keep_tensorflow_unstarted()


def exit_quickly():
    """Lets a process that started a backend end without the garbage collector's last walk over its objects.

    TensorFlow and Keras leave millions of them; at exit Python's final collections walk them
    all, 1.5–4 s of a short `cnnlab train` on 2 cores (bench/startup.py). Frozen at exit, they
    are freed with the process instead: atexit handlers still run, and so do the finalizers
    of objects outside reference cycles (cnnlab closes its files and writers itself).
    """
    atexit.unregister(gc.freeze)  # once, however many commands a process runs
    atexit.register(gc.freeze)


def name():
    """The backend Keras runs on in this process (imports Keras)."""
    import keras

    return keras.backend.backend()


def is_tensorflow():
    return name() == "tensorflow"


def version(backend=None):
    """The installed version of a backend's package, read without importing it."""
    try:
        return metadata.version(DISTRIBUTIONS[backend or name()])
    except metadata.PackageNotFoundError:
        return None


def devices():
    """The devices the backend sees, by its own names (e.g. /physical_device:CPU:0, TFRT_CPU_0, cpu)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return [device.name for device in tf.config.list_physical_devices()]
    if backend == "jax":
        import jax

        return [str(device) for device in jax.devices()]
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def gpu_count():
    """GPUs (or other accelerators) the backend computes on; 0 on a CPU-only machine."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform != "cpu" for device in jax.devices())
    import torch

    return torch.cuda.device_count()


def share_cores(budget, parts=1):
    """Holds the backend to `budget` cores (compare's and sweep's workers get a share each).

    TensorFlow: budget // parts threads per operation and room for `parts` operations at
    once (cnnlab/training/tf_loop.py's split batches); it fixes its threads at its first operation, so
    in a process where it already runs the threads stay as they are. PyTorch: budget
    threads. JAX (XLA) sizes its thread pool from the cores the process's affinity allows,
    which is how a worker's share is given (cores.give_cores), so nothing is set for it.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(max(1, budget // parts))
            tf.config.threading.set_inter_op_parallelism_threads(max(budget, parts))
        except RuntimeError:
            pass
    elif backend == "torch":
        import torch

        torch.set_num_threads(max(1, budget))


def threads_per_op():
    """The threads one operation may use, as env.json records them."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or "TensorFlow's default"
    if backend == "torch":
        import torch

        return torch.get_num_threads()
    return "XLA's default (the cores the affinity allows)"


def cpu_has_bfloat16(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def global_random_state():
    """The state of the backend's global random generator where Keras draws from it, as JSON data; None elsewhere.

    On PyTorch, Keras draws the masks of a Dropout layer without a seed from torch's global
    generator (`torch.nn.functional.dropout`), so a resumed run needs that state back to
    draw the masks the uninterrupted run drew. TensorFlow and JAX draw from the layers' own
    seed generators, which are model variables.
    """
    if name() != "torch":
        return None
    import torch

    return torch.get_rng_state().tolist()


def set_global_random_state(state):
    if name() != "torch" or state is None:
        return
    import torch

    torch.set_rng_state(torch.tensor(state, dtype=torch.uint8))
