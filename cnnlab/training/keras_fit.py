"""Training on JAX and PyTorch: Keras' own `fit` (jit-compiled on JAX), fed by a seeded `PyDataset`.

TensorFlow keeps cnnlab's own loop (cnnlab/training/tf_loop.py), measured faster there than `fit`;
on JAX and PyTorch `fit` is what runs (BENCHMARKS.md, "Backends"). What the loop adds on
TensorFlow and these backends do without: split batches (`train.batch_parts` is 1) and
many batches per compiled call (`train.steps_per_execution: auto` is 1, Keras' default;
JAX's `fit` runs a larger number as a Python loop of single steps, PyTorch's refuses one).

Several devices: `distribution.strategy: data_parallel` is Keras' `DataParallel` on
JAX, every batch split across the devices JAX sees. tf.distribute stays TensorFlow's;
PyTorch trains on one device.

Resume is Keras' BackupAndRestore inside `fit` (among the run's callbacks), and each
epoch's image order is drawn from (seed, epoch) (`batches.epoch_order`), so a resumed
run sees the orders the uninterrupted one saw.
"""

import signal
from contextlib import contextmanager

from cnnlab.config.schema import AUTO
from cnnlab.errors import ConfigError

TF_STRATEGIES = ("one_device", "mirrored", "multi_worker")


def check_supported(config, backend):
    """What this config asks of training that `backend` cannot do, as one ConfigError; before any run folder exists."""
    strategy = config.distribution.strategy
    if backend == "tensorflow":
        if strategy == "data_parallel":
            raise ConfigError("distribution.strategy", "data_parallel is keras.distribution, which cnnlab runs on --backend jax; "
                              "under tensorflow use mirrored (tf.distribute)")
        return
    if strategy in TF_STRATEGIES:
        other = "data_parallel (keras.distribution)" if backend == "jax" else "--backend jax with data_parallel"
        raise ConfigError("distribution.strategy", f"{strategy} is tf.distribute, which needs --backend tensorflow; "
                          f"on {backend} use {other}")
    if strategy == "data_parallel" and backend == "torch":
        raise ConfigError("distribution.strategy", "data_parallel: cnnlab trains on one device with PyTorch; "
                          "use --backend jax (data_parallel) or --backend tensorflow (mirrored) for several devices")
    parts = config.train.batch_parts
    if parts != AUTO and parts > 1:
        raise ConfigError("train.batch_parts", f"can be more than 1 only with --backend tensorflow (cnnlab's own loop); "
                          f"on {backend} set it to 1 or auto, received {parts}")
    steps = config.train.steps_per_execution
    if backend == "torch" and steps != AUTO and steps > 1:
        raise ConfigError("train.steps_per_execution", f"must be 1 (or auto) with --backend torch, as Keras' fit requires there; "
                          f"received {steps}")


def data_parallel():
    """Keras' DataParallel over every device JAX sees, made the distribution for what is built next; returns the device count."""
    import keras

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


def replicas(config):
    """How many devices share each batch: the distribution set by `data_parallel`, else 1."""
    if config.distribution.strategy != "data_parallel":
        return 1
    import keras

    distribution = keras.distribution.distribution()
    return 1 if distribution is None else len(distribution.device_mesh.devices.flatten())


def fit(job, callbacks, epochs, initial_epoch=0, verbose=1):
    """Trains the job's model with `model.fit` on its uint8 images, the run's callbacks and the seeded epoch orders.

    `initial_epoch` is where a resumed run starts; Keras' BackupAndRestore among
    `callbacks` restores the weights and optimizer and says the same. With several
    replicas (`data_parallel`) every batch must divide among the devices: each epoch leaves out the fewer than
    that many images that would make its last batch indivisible (other ones each epoch
    when shuffled). Validation runs at 4 × `batch_size`, as cnnlab's TensorFlow loop does.
    Returns the last epoch's logs.
    """
    from cnnlab.data.array_batches import ArrayBatches, EpochOrder

    model, prep, splits, settings = job.model, job.prep, job.splits, job.config.train
    batch_size, devices = settings.batch_size, replicas(job.config)
    train_batches = ArrayBatches(splits.x_train, splits.y_train, prep, batch_size,
                                 seed=job.config.seed if settings.shuffle else None, multiple_of=devices,
                                 mix=batch_mixer(job.config, model.output_shape[-1]))
    val_batches = ArrayBatches(splits.x_val, splits.y_val, prep, 4 * batch_size, multiple_of=devices)
    try:
        with interrupts_between_batches() as interrupt:
            history = model.fit(train_batches, validation_data=val_batches, epochs=epochs, initial_epoch=initial_epoch,
                                callbacks=[EpochOrder(train_batches), *callbacks, interrupt], verbose=verbose,
                                class_weight=job.class_weight,
                                shuffle=False)  # the order is the PyDataset's own; fit's would reorder its batches by NumPy's state
    finally:
        if devices > 1:  # scoring the best model afterwards (and anything else in this process) runs on one device
            import keras

            keras.distribution.set_distribution(None)
    return {key: values[-1] for key, values in history.history.items() if values}


def batch_mixer(config, num_classes):
    """MixUp and CutMix of model.augmentation as a function of a training batch, or None where none is configured."""
    from cnnlab.model import mixing

    layers = mixing.make_mixing_layers(config)
    if not layers:
        return None
    return lambda images, labels: mixing.mix_batch(layers, images, labels, num_classes)


class InterruptBetweenBatches:
    """Ctrl-C and SIGTERM during `fit`, raised as KeyboardInterrupt where Keras can carry it: at the next batch's end.

    On JAX, a KeyboardInterrupt raised by Python's signal handler at a random moment was
    sometimes lost: raised inside a Python function that JAX's C++ calls, it vanished, and
    the run went on to complete with exit code 0 (about one Ctrl-C in four in
    tests/test_resume.py). So during `fit` the first signal is only recorded, and this
    callback, the last of the run's, raises it once the batch (or epoch) in progress has
    ended and every other callback has seen it. A second signal raises at once, for a step
    that does not end.
    """

    def __init__(self):
        import keras

        self.pending = False
        self.received = set()
        self.callback = keras.callbacks.LambdaCallback(on_train_batch_end=self.check, on_test_batch_end=self.check,
                                                       on_epoch_end=self.check)

    def handle(self, signum, frame):
        self.received.add(signum)
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def check(self, *args, **kwargs):
        if self.pending:
            raise KeyboardInterrupt


@contextmanager
def interrupts_between_batches():
    """Yields the callback of an InterruptBetweenBatches whose handler takes SIGINT and SIGTERM inside the block.

    Outside the main thread signals cannot be handled here; the callback then never raises.
    After a SIGTERM, a later one is ignored, as train.sigterm_as_interrupt has it: it must not cut the clean-up short.
    """
    interrupt = InterruptBetweenBatches()
    try:
        previous = {signum: signal.signal(signum, interrupt.handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield interrupt.callback
        return
    try:
        yield interrupt.callback
    finally:
        for signum, handler in previous.items():
            ignore = signum == signal.SIGTERM and signum in interrupt.received
            signal.signal(signum, signal.SIG_IGN if ignore else handler)
