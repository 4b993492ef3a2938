"""tf.distribute for cnnlab: the strategy a config asks for, the chief's role, and the cluster in TF_CONFIG.

cnnlab does no distribution of its own: TensorFlow's strategies split every global
batch across replicas and all-reduce the gradients; this module only picks one,
prepares datasets for it, and tells a worker whether it owns the run folder.
"""

import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager, nullcontext

from cnnlab.runtime import keras_compat
from cnnlab.errors import CnnlabError, ConfigError, short_repr

TF_CONFIG = "TF_CONFIG"
DEFAULT_CONNECT_TIMEOUT_S = 120.0
DEFAULT_STEP_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 2.0  # how long one look at a worker's address may take


def connect_timeout():
    """How long a worker waits for the others: CNNLAB_CONNECT_TIMEOUT seconds, 120 by default."""
    return seconds_from_environment("CNNLAB_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT_S)


def step_timeout():
    """How long a multi-worker training step may take before the watchdog gives up: CNNLAB_STEP_TIMEOUT seconds, 300 by default."""
    return seconds_from_environment("CNNLAB_STEP_TIMEOUT", DEFAULT_STEP_TIMEOUT_S)


def seconds_from_environment(name, default):
    """A positive number of seconds from the variable `name`, read when used; `default` when unset or not one."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


class ClusterError(CnnlabError):
    """The cluster in TF_CONFIG (or --workers) is malformed or a worker cannot be reached."""


# ---------------------------------------------------------------- the cluster (no TensorFlow needed)


def tf_config_for(workers, index):
    """`host1:port,host2:port` and this worker's index → the TF_CONFIG JSON text TensorFlow reads."""
    addresses = [w.strip() for w in workers.split(",") if w.strip()] if isinstance(workers, str) else list(workers)
    if len(addresses) < 2:
        raise ClusterError(f"--workers needs at least two host:port addresses separated by commas, received {short_repr(workers)}")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterError(f"--workers: expected host:port, received {short_repr(address)}")
    if index is None or not 0 <= index < len(addresses):
        raise ClusterError(f"--worker-index must be between 0 and {len(addresses) - 1} for {len(addresses)} workers, received {index}")
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def read_tf_config():
    """The cluster and this task from TF_CONFIG, checked, as (worker addresses, task type, task index)."""
    text = os.environ.get(TF_CONFIG)
    if not text:
        raise ClusterError("distribution.strategy multi_worker needs the cluster: set TF_CONFIG, or give --workers host1:port,host2:port --worker-index I")
    try:
        spec = json.loads(text)
        workers = list(spec["cluster"].get("chief", [])) + list(spec["cluster"]["worker"])
        task_type, task_index = spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ClusterError('TF_CONFIG is not valid: expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    return workers, task_type, task_index


def own_address():
    workers, task_type, task_index = read_tf_config()
    offset = 1 if task_type == "worker" and json.loads(os.environ[TF_CONFIG])["cluster"].get("chief") else 0
    return workers[task_index + offset]


def wait_for_workers(timeout_s=None):
    """Waits until every other worker answers on its address; one line naming the first that never did.

    TensorFlow waits for a missing worker inside the strategy's constructor without
    end (and deaf to SIGTERM), so cnnlab checks first. Each worker answers on its own
    address meanwhile, so workers started in any order find each other; it lets the
    port go just before TensorFlow takes it, and a peer that looks in that moment retries.
    The first worker, TensorFlow's coordination leader, also looks at its own address:
    TensorFlow connects to it from there too, so an address that is not this machine's
    (a one-worker cluster copied from elsewhere) would hang in the constructor as well.
    """
    timeout_s = connect_timeout() if timeout_s is None else timeout_s
    workers, _, _ = read_tf_config()
    me = own_address()
    host, _, port = me.rpartition(":")
    listener = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("" if host not in ("localhost", "127.0.0.1") else host, int(port)))
    except OSError as exc:
        listener.close()
        raise ClusterError(f"cannot listen on this worker's address {me}: {exc.strerror or exc}") from exc
    listener.listen(16)
    listener.settimeout(0.1)
    done = threading.Event()
    answering = threading.Thread(target=answer_probes, args=(listener, done), daemon=True)
    answering.start()
    try:
        deadline = time.monotonic() + timeout_s
        for address in workers:
            if address != me:
                wait_for(address, deadline, timeout_s)
            elif address == workers[0]:
                wait_for(address, deadline, timeout_s, own=True)
    finally:
        done.set()
        answering.join()  # a thread blocked in accept() would keep the port bound
        listener.close()


def answer_probes(listener, done):
    """Accepts and closes connections until `done` is set."""
    while not done.is_set():
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        connection.close()


def wait_for(address, deadline, timeout_s, own=False):
    """Retries `address` until it answers or `deadline` passes; `own` is this worker's address, probed through its listener."""
    what = f"this worker's own address {address}" if own else f"worker {address}"
    hint = ("TensorFlow connects to it from this worker too: give an address of this machine" if own else
            "check that every worker was started with the same cluster (TF_CONFIG or --workers), the addresses and the firewall")
    while True:
        try:
            reach(address)
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ClusterError(f"cannot reach {what} within {timeout_s:.0f} s ({exc.strerror or exc}); {hint}") from exc
            time.sleep(0.2)


def reach(address, timeout_s=PROBE_TIMEOUT_S):
    """Opens and closes a TCP connection to `host:port`; OSError when nothing answers there."""
    host, _, port = address.rpartition(":")
    socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()


# ---------------------------------------------------------------- strategies


def make_strategy(distribution):
    """The tf.distribute strategy for the config's `distribution` section; None for the default (no scope)."""
    if distribution.strategy != "multi_worker":
        ignore_tf_config(distribution.strategy)
    if distribution.strategy == "default":
        return None
    import tensorflow as tf

    if distribution.strategy == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if distribution.strategy == "mirrored":
        devices = check_devices(distribution.devices) if distribution.devices else None
        return tf.distribute.MirroredStrategy(devices=devices)
    read_tf_config()  # a clear line before TensorFlow's own parsing
    keras_compat.reduce_scalar_logs_across_workers()
    wait_for_workers()
    options = tf.distribute.experimental.CommunicationOptions()  # no timeout_seconds: with one, every collective starts a thread that is never reclaimed (thousands per minute)
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver(), communication_options=options)


def ignore_tf_config(strategy_name):
    """Takes TF_CONFIG out of the environment of a process that trains alone, and says so in one line.

    Only MultiWorkerMirroredStrategy reads it, but whoever exported it may believe this
    process joins a cluster. Taken out, it is said once per process (compare-optimizers
    trains many runs in one), and nothing this process starts reads it either.
    """
    if os.environ.pop(TF_CONFIG, None):
        print(f"Note: TF_CONFIG is ignored: distribution.strategy is {strategy_name}, so this process trains alone "
              "(--strategy multi_worker joins the cluster)", file=sys.stderr, flush=True)


def check_devices(devices):
    """Each configured device must exist here; a miss lists the visible ones."""
    import tensorflow as tf

    visible = [d.name for d in tf.config.list_logical_devices()]
    short = {name.split("device:")[-1].upper(): name for name in visible}
    resolved = []
    for i, device in enumerate(devices):
        key = device.split("device:")[-1].lstrip("/").upper()
        if key not in short:
            raise ConfigError(f"distribution.devices[{i}]", f"no such device on this machine; visible: {', '.join(short)}, received {short_repr(device)}")
        resolved.append(short[key])
    return resolved


def scope(strategy):
    """`strategy.scope()`, or nothing for the default strategy, so single-device training is unchanged."""
    return strategy.scope() if strategy is not None else nullcontext()


def num_replicas(strategy):
    return 1 if strategy is None else strategy.num_replicas_in_sync


def is_chief(strategy):
    """Only the chief writes the run folder: worker 0 (or the `chief` task) of a multi-worker cluster, else always."""
    if strategy is None or not keras_compat.in_multi_worker_mode(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def shard_by_data(dataset):
    """In-memory arrays (also image folders, which cnnlab loads into memory) are sharded by element.

    FILE sharding needs one file per worker at least; cnnlab's datasets come from
    tensors, so every worker builds the same seeded pipeline and keeps its share.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_without_peeking(model, dataset, strategy):
    """Builds the model's metrics, loss and optimizer from the dataset's spec instead of from a batch.

    Under a strategy, Keras 3 (`_maybe_symbolic_build`) reads one batch from a fresh
    iterator before `fit`. That starts one extra pass of tf.data's reshuffle, so the
    epochs would come in another order than single-device training with the same seed,
    and under MultiWorkerMirroredStrategy its all-reduce of that batch fails outright
    ("Attempt to convert a value (PerReplica...)"). The spec is all the build needs.
    """
    keras_compat.build_from_spec(model, dataset.element_spec, strategy)


def scale_learning_rate(model, distribution, strategy):
    """`scale_learning_rate: linear` multiplies the optimizer's learning rate by the number of replicas."""
    replicas = num_replicas(strategy)
    if distribution.scale_learning_rate != "linear" or replicas == 1:
        return
    rate = model.optimizer.learning_rate
    if keras_compat.has_schedule(model.optimizer):
        raise ConfigError("distribution.scale_learning_rate", "linear scaling needs a constant compile.optimizer.learning_rate, not a schedule")
    model.optimizer.learning_rate = float(rate) * replicas


@contextmanager
def precision_policy(mixed_precision, as_written=None):
    """The config's mixed-precision policy while the model is built, when the devices here compute in it.

    mixed_float16 needs a GPU (on a CPU it would only be slower); mixed_bfloat16 a GPU or a
    CPU with bfloat16 instructions. Otherwise it is refused with one line, on every backend.
    `as_written` is how the config says it (true or the policy's name), for that line.
    """
    if not mixed_precision:
        yield
        return
    import keras

    from cnnlab.runtime import backend

    if not backend.gpu_count() and not (mixed_precision == "mixed_bfloat16" and backend.cpu_has_bfloat16()):
        need = "a GPU" if mixed_precision == "mixed_float16" else \
            f"a GPU or a CPU with bfloat16 instructions ({', '.join(backend.BFLOAT16_CPU_FLAGS)})"
        raise ConfigError("mixed_precision", f"{as_written or mixed_precision} needs {need} and none is visible; "
                          "set mixed_precision: false to train in float32 on the CPU")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextmanager
def environment_tf_config(text):
    """Sets TF_CONFIG for the duration (what --workers / --worker-index become), restoring the previous value."""
    if text is None:
        yield
        return
    previous = os.environ.get(TF_CONFIG)
    os.environ[TF_CONFIG] = text
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TF_CONFIG, None)
        else:
            os.environ[TF_CONFIG] = previous


# ---------------------------------------------------------------- a worker lost during training


@contextmanager
def watch_steps(strategy, run_dir, give_up):
    """Yields the callbacks that end a multi-worker process whose training stopped, with one line; [] otherwise.

    A worker that dies mid-training is usually noticed by TensorFlow (its coordination
    service misses the heartbeats and aborts the step); that error becomes the same one
    line naming the workers that no longer answer. A worker that is alive but never
    joins the next step (a hung disk, a deadlock) leaves the others blocked inside a
    collective until someone presses Ctrl-C, and TensorFlow's own collective timeout leaks
    a thread per collective; so a watchdog thread ends the process instead once no step
    has finished for CNNLAB_STEP_TIMEOUT seconds, after `give_up(reason)` has recorded why.
    The chief names `run_dir` in the line that says how to resume; the other workers'
    folders are temporary, so they name the chief's.
    """
    import tensorflow as tf

    peers = []
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        me = own_address()
        peers = [address for address in read_tf_config()[0] if address != me]
    if not peers:
        yield []
        return
    watchdog = StepWatchdog(peers, step_timeout(), resume_hint(run_dir if is_chief(strategy) else None), give_up)
    watchdog.thread.start()
    try:
        yield [watchdog.callback()]
    except tf.errors.OpError:  # TensorFlow aborted the step; a lost worker is said as the watchdog says it
        watchdog.stop()
        silent = watchdog.silent_peers()
        if not silent:
            raise
        raise ClusterError(f"{stopped_answering(silent)}; {watchdog.resume_hint}") from None
    finally:
        watchdog.stop()


class StepWatchdog:
    """Ends the process, from a thread of its own, when no training step has finished for `timeout_s` seconds.

    The clock runs from the first finished step, and pauses while the first validation
    traces its function, so TensorFlow's tracing never counts as a stalled step.
    """

    def __init__(self, peers, timeout_s, resume_hint, give_up):
        self.peers = peers
        self.timeout_s = timeout_s
        self.resume_hint = resume_hint
        self.give_up = give_up
        self.last_step = None  # time.monotonic() of the last finished step; None while nothing is to be timed
        self.validated = False
        self.stopped = threading.Event()
        self.lock = threading.Lock()  # held while giving up, so that stop() cannot race the final line
        self.thread = threading.Thread(target=self.watch, name="cnnlab-step-watchdog", daemon=True)

    def callback(self):
        import keras

        return keras.callbacks.LambdaCallback(on_train_batch_end=self.step_finished, on_epoch_end=self.step_finished,
                                              on_test_begin=self.validation_begins, on_test_batch_end=self.test_step_finished)

    def step_finished(self, index=None, logs=None):
        self.last_step = time.monotonic()

    def validation_begins(self, logs=None):
        if not self.validated:
            self.last_step = None

    def test_step_finished(self, batch, logs=None):
        self.validated = True
        self.step_finished()

    def watch(self):
        while not self.stopped.wait(min(1.0, self.timeout_s / 10)):
            last = self.last_step
            if last is not None and time.monotonic() - last > self.timeout_s:
                self.end_process()

    def end_process(self):
        """Records why, prints one line and ends the process: its main thread is stuck inside TensorFlow."""
        with self.lock:
            if self.stopped.is_set():
                return
            silent = self.silent_peers()
            waited = f"no training step finished in {self.timeout_s:.0f} s (CNNLAB_STEP_TIMEOUT)"
            what = (f"{stopped_answering(silent)}; {waited}" if silent else
                    f"{waited}, though every worker still answers: one is stuck, or a step needs a larger CNNLAB_STEP_TIMEOUT")
            reason = f"{what}; {self.resume_hint}"
            try:
                self.give_up(reason)
            finally:
                sys.stdout.flush()
                sys.stderr.write(f"Error: {reason}\n")
                sys.stderr.flush()
                os._exit(ClusterError.exit_code)

    def stop(self):
        with self.lock:
            self.stopped.set()

    def silent_peers(self):
        return [address for address in self.peers if not answers(address)]


def answers(address):
    try:
        reach(address)
    except OSError:
        return False
    return True


def stopped_answering(addresses):
    return f"worker {addresses[0]} stopped answering" if len(addresses) == 1 else f"workers {', '.join(addresses)} stopped answering"


def resume_hint(run_dir):
    """How to go on: the chief names its run folder; the other workers only know it is the chief's."""
    run = run_dir if run_dir is not None else "RUN_DIR (the chief's run folder)"
    return f"resume with: cnnlab train --resume {run} on every worker"
