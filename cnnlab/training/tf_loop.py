"""The epoch loop of single-device training: Keras' own steps, many per call, on data in memory.

Why not `model.fit`: on the 2-core machines cnnlab is measured on, `fit` ran at about
0.8× of what its own compiled step can do (BENCHMARKS.md). The difference is the loop
around the step: `tf.data` threads that compete with the compute threads for two cores,
and a return to Python after every batch. This loop removes both:

- batches are gathered from the uint8 images held in memory and preprocessed inside
  the compiled function (the same `preprocess_images` that evaluate and predict use);
- one call runs `steps_per_execution` batches, a number fixed before training (from the
  model's size under `auto`), so batch-level callbacks act at the batches they name, as
  under `fit` with that `steps_per_execution`, on every run alike;
- on a multi-core CPU each batch can be split into parts computed side by side, one
  thread each (`batch_parts`), where a batch of 32 is too small to split well across
  threads operation by operation; validation runs in batches of 4 × the training batch.

Each epoch visits the images in the order `tf.data`'s seeded shuffle gives that epoch,
the same order the `tf.data` pipeline of a tf.distribute run sees, so both paths train
alike on the same seed, and a resumed run sees the orders of the uninterrupted one.

What stays Keras': `train_step` and `test_step` for whole batches, and for split ones
the loss, regularisation, metrics and optimizer of the compiled model; the callbacks,
called through Keras' `CallbackList` in the order `fit` calls them. `tests/test_loop.py`
checks that weights and logs equal `fit`'s, and that split batches train to the same
weights as whole ones for a model without random layers. Under a tf.distribute strategy
cnnlab uses `fit` itself.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from cnnlab.runtime import keras_compat, tf_logs
from cnnlab.config.schema import AUTO
from cnnlab.runtime.cores import usable_cores
from cnnlab.errors import ConfigError
from cnnlab.data.preprocessing import preprocess_images

HOST = "/CPU:0"
FLOPS_PER_CALL = 1.2e11  # a compiled call's work under steps_per_execution: auto; about 0.5 s on this project's 2-core machine (BENCHMARKS.md)
VALIDATION_BATCHES = 4  # validation batch = 4 × train.batch_size: forward passes only, about the memory of a
#                         training step, 1.5× the images/s of validating at the training batch (same metrics)
MIN_PART = 8  # the fewest images a part may have: parts of 8 and more paid off on both CPUs measured, parts of 4 on one
# How many parts a core budget splits a batch into, measured by bench/split_rule.py (BENCHMARKS.md, "When a split
# batch pays off") on a 2-core AMD EPYC and a 16-core Intel Xeon (under taskset): a split paid off only with one core
# per part (2 on 2 cores, 4 on 4, 8 on 8), never with several threads per part, and not at all on 16 cores, where
# whole batches on 16 threads were fastest. A budget takes the row of the most cores it has.
PARTS_BY_CORES = {1: 1, 2: 2, 4: 4, 8: 8, 16: 1}

# Layers whose output for an image, in training, depends on that image alone. A batch of
# such layers can be split into parts whose gradients average to the whole batch's.
# BatchNormalization (statistics over the batch) and activity regularisers (a sum over
# the batch) are not among them; neither is anything not listed here.
PER_IMAGE_LAYERS = frozenset("""
    Activation AlphaDropout AveragePooling1D AveragePooling2D AveragePooling3D Conv1D Conv2D Conv2DTranspose
    Conv3D Conv3DTranspose Cropping1D Cropping2D Cropping3D Dense DepthwiseConv1D DepthwiseConv2D Dropout ELU
    Flatten GaussianDropout GaussianNoise GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D
    GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GroupNormalization LayerNormalization LeakyReLU
    MaxPooling1D MaxPooling2D MaxPooling3D Permute PReLU ReLU Rescaling Reshape SeparableConv1D SeparableConv2D
    Softmax SpatialDropout1D SpatialDropout2D SpatialDropout3D UnitNormalization UpSampling1D UpSampling2D
    UpSampling3D ZeroPadding1D ZeroPadding2D ZeroPadding3D
""".split())


def fit(job, callbacks, epochs, initial_epoch=0, verbose=1):
    """Trains the job's model as `model.fit` would, on its (uint8) training and validation images, with the
    batch size, shuffling, seed, `batch_parts` and `steps_per_execution` of its config's `train` section.

    Validation metrics equal those of `fit` validating at the training batch size, up to
    float rounding: the mean over the same images.

    `initial_epoch` is where a resumed run starts: the epoch Keras' BackupAndRestore holds;
    the epochs from there see the image orders they would have seen without the interruption.
    `batch_parts` > 1 splits every batch into that many parts computed side by side.
    `steps_per_execution` batches run per compiled call, with Keras' meaning: batch-level
    callbacks are called around each call, with its first and last batch.
    Returns the last epoch's logs.
    """
    model, prep, settings = job.model, job.prep, job.config.train
    x_train, y_train, x_val, y_val = job.splits.x_train, job.splits.y_train, job.splits.x_val, job.splits.y_val
    batch_size, parts, steps_per_execution = settings.batch_size, settings.batch_parts, settings.steps_per_execution
    train_steps = math.ceil(len(x_train) / batch_size)
    val_batch_size = VALIDATION_BATCHES * batch_size
    val_steps = math.ceil(len(x_val) / val_batch_size)
    callbacks = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose,
                                             epochs=epochs, steps=train_steps, model=model)
    if parts == 1:
        train_step, test_step = model.train_step, model.test_step
    else:
        train_step, test_step = train_step_on_parts(model, parts), test_step_on_parts(model, parts)
    if model.jit_compile:  # as `fit` does (Keras' default where there is a GPU): XLA compiles the steps
        train_step, test_step = tf.function(train_step, jit_compile=True), tf.function(test_step, jit_compile=True)
    from cnnlab.training.keras_fit import batch_mixer

    run_train, step_function = compiled_steps(train_step, x_train, y_train, prep, batch_size, parts, model.train_step,
                                              per_class_weights(job.class_weight, model.output_shape[-1]),
                                              mix=batch_mixer(job.config, model.output_shape[-1]))
    keras_compat.set_train_function(model, step_function)
    run_test, _ = compiled_steps(test_step, x_val, y_val, prep, val_batch_size, parts, model.test_step)
    orders = epoch_orders(len(x_train), settings.shuffle, job.config.seed)
    for _ in range(initial_epoch):  # the orders of the epochs done before an interruption
        next(iter(orders))
    val_order = tf.range(len(x_val), dtype=tf.int32)
    build_metrics(model, x_train[:1], y_train[:1], prep)

    model.stop_training = False
    callbacks.on_train_begin()
    logs = None
    for epoch in range(initial_epoch, epochs):
        if model.stop_training:  # a resumed run whose past epochs had already decided to stop (early stopping)
            break
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        order = tf.cast(next(iter(orders)), tf.int32)
        run_epoch(model, run_train, order, train_steps, steps_per_execution,
                  callbacks.on_train_batch_begin, callbacks.on_train_batch_end)
        epoch_logs = metrics_result(model)

        model.reset_metrics()  # validation, as `fit` runs it through `evaluate`
        callbacks.on_test_begin()
        run_epoch(model, run_test, val_order, val_steps, steps_per_execution,
                  callbacks.on_test_batch_begin, callbacks.on_test_batch_end)
        val_logs = metrics_result(model)
        callbacks.on_test_end(val_logs)

        epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        logs = epoch_logs
        if model.stop_training:
            break
    if epochs > initial_epoch:
        model.optimizer.finalize_variable_values(model.trainable_weights)
    callbacks.on_train_end(logs=logs)
    return logs


def build_metrics(model, images, labels, prep):
    """Creates the compiled metrics' state before the callbacks start, from one image.

    Callbacks that watch a metric in `auto` mode (EarlyStopping, ModelCheckpoint,
    ReduceLROnPlateau) ask the model's metrics which way is better; unbuilt, Keras
    cannot tell for `val_accuracy`. `fit` builds them at its first step, too late for
    a resumed run whose callbacks replay the past epochs in `on_train_begin`.
    """
    x = preprocess_images(tf.convert_to_tensor(images), prep)
    model.compute_metrics(x, tf.convert_to_tensor(labels), model(x, training=False))
    model.reset_metrics()


def steps_per_execution(model, batch_size, steps):
    """The batches one compiled call runs when the config says `auto`: from the model's size, never from a clock.

    A call should last a fraction of a second on a CPU like the ones cnnlab is measured
    on, so that Ctrl-C, the progress bar and batch-level callbacks act promptly, yet
    long enough that Python's return after each call costs nothing. The cost of a batch
    is estimated from the model's multiply-adds (training ≈ 3 × the forward pass); the
    same config gives the same number on every machine, and the run records it.
    """
    per_batch = 3 * forward_flops(model) * batch_size
    return max(1, min(steps, math.ceil(FLOPS_PER_CALL / max(per_batch, 1))))


def forward_flops(model):
    """Floating-point operations of one image's forward pass, counting the layers that have a kernel
    (2 × kernel size × output positions) and one operation per output value of the others."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a backbone (model.backbone): counted by its own layers
            total += forward_flops(layer)
            continue
        shape = layer.output.shape[1:] if hasattr(layer, "output") else ()
        positions = math.prod(dim or 1 for dim in shape[:-1]) if len(shape) > 1 else 1
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            total += 2 * math.prod(kernel.shape) * positions
        else:
            total += math.prod(dim or 1 for dim in shape)
    return total


def batch_parts(config, cores=None, gpus=None):
    """How many parts to split each training batch into, so that each core of the budget works on a part of its own.

    The convolutions of a small batch do not split well across threads: on 2 to 8 cores,
    parts computed side by side on one thread each trained the Fashion-MNIST CNN 1.07–1.6×
    faster than whole batches on all the threads, while fewer parts with several threads
    each lost (0.54–0.89×), and on 1 or 16 cores no split paid off (BENCHMARKS.md). So a
    budget gets its PARTS_BY_CORES row if the batch gives every part MIN_PART images, else
    whole batches. The update is the same, the mean gradient over the whole batch, for
    every model whose layers all treat images independently (PER_IMAGE_LAYERS); any other
    model, a GPU or a tf.distribute strategy keeps whole batches.
    """
    cores = usable_cores() if cores is None else cores
    gpus = len(tf.config.list_physical_devices("GPU")) if gpus is None else gpus
    if gpus or not splits_alike(config):
        return 1
    parts = parts_for_cores(cores)
    return parts if config.train.batch_size >= parts * MIN_PART else 1  # fewer parts, with several threads each, lost


def parts_for_cores(cores):
    """PARTS_BY_CORES' part count for the row of the most cores that `cores` has (1 below every row)."""
    rows = [count for count in PARTS_BY_CORES if count <= cores]
    return PARTS_BY_CORES[max(rows)] if rows else 1


def resolve_batch_parts(config):
    """train.batch_parts as a number: `auto` becomes what suits this machine (`batch_parts`), a number is kept.

    The number is what makes a run reproducible: Dropout and the other random layers draw
    one mask per part, so the same seed trains to other weights in 1 part than in 2. A
    run writes the number into its config.yaml, and that file trains alike on any machine.
    """
    wanted = config.train.batch_parts
    if wanted == AUTO:
        return batch_parts(config)
    if wanted > 1 and not splits_alike(config):
        raise ConfigError("train.batch_parts", "can be more than 1 only on one device (distribution.strategy default) for models whose "
                          "layers all treat images independently (no BatchNormalization, activity_regularizer or model.backbone), "
                          "without train.class_weight; "
                          f"set it to 1 or auto, received {wanted}")
    return wanted


def splits_alike(config):
    """Whether a batch split into parts gives the whole batch's update: see PER_IMAGE_LAYERS."""
    per_image = all(layer.type in PER_IMAGE_LAYERS and layer.kwargs.get("activity_regularizer") is None
                    for layer in config.model.layers)
    # a backbone keeps whole batches: most have BatchNormalization, and none is checked layer by layer here
    # class weights reach Keras' train_step as sample weights, which the split step does not take
    return (per_image and config.model.backbone is None and config.distribution.strategy == "default"
            and config.train.class_weight is None)


def share_cores(parts):
    """Turns the process's core budget (`cores.usable_cores`) into TensorFlow's threads: budget // parts per
    operation, and room for at least `parts` operations at once, so the parts run side by side within the budget.

    Set for whole batches too, so that a share a parent gave (compare's workers) holds
    where TensorFlow would otherwise take every core the affinity allows. TensorFlow
    fixes its threads when it starts: this must run before the first operation. In a
    process where TensorFlow already runs (tests, a notebook) it leaves the threads as
    they are; the split batches then train to the same weights, slower. (backend.share_cores does it.)
    """
    from cnnlab.runtime import backend

    backend.share_cores(usable_cores(), parts)


def train_step_on_parts(model, parts):
    """Keras' TensorFlow `train_step`, line for line, except that the batch is split into `parts`
    whose gradients are averaged by size before the one optimizer update of the batch.

    Each part's loss is the mean over its images, so the size-weighted average of the
    parts' gradients is the gradient of the whole batch's mean loss (regularisation
    terms, the same in every part, average to themselves). With PER_IMAGE_LAYERS only,
    the parts share no computation, and TensorFlow runs them on different threads.
    """
    optimizer = model.optimizer
    weights = model.trainable_weights

    def step(data):
        x, y = data
        size = tf.cast(tf.shape(x)[0], "float32")
        gradients = [None] * len(weights)
        for x_part, y_part in split_batch(x, y, parts):
            with tf.GradientTape() as tape:
                y_pred = model(x_part, training=True)
                loss = model.compute_loss(x=x_part, y=y_part, y_pred=y_pred, training=True)
                keras_compat.loss_tracker(model).update_state(loss, sample_weight=tf.shape(x_part)[0])  # what `fit` logs as "loss"
                loss = optimizer.scale_loss(loss)
            share = tf.cast(tf.shape(x_part)[0], "float32") / size
            gradients = [add_scaled(total, gradient, share) for total, gradient in zip(gradients, tape.gradient(loss, weights))]
            model.compute_metrics(x_part, y_part, y_pred)
        optimizer.apply(gradients, weights)

    return step


def add_scaled(total, gradient, share):
    """total + share × gradient, where None (a weight the loss does not reach) stays None."""
    if gradient is None:
        return total
    scaled = gradient * tf.cast(share, gradient.dtype)
    return scaled if total is None else total + scaled


def test_step_on_parts(model, parts):
    """Keras' `test_step` on each part of the batch: the metrics add up to those of the whole batch."""

    def step(data):
        for part in split_batch(*data, parts):
            model.test_step(part)

    return step


def split_batch(x, y, parts):
    """`parts` consecutive parts of a batch, sizes differing by at most one (a part may be empty)."""
    if parts == 1:
        return [(x, y)]
    size = tf.shape(x)[0]
    sizes = tf.stack([(size + parts - 1 - i) // parts for i in range(parts)])
    return list(zip(tf.split(x, sizes, num=parts), tf.split(y, sizes, num=parts)))


def per_class_weights(class_weight, num_classes):
    """{class index: weight} as a tensor indexed by class (1 for a class left out), or None without class weights."""
    if class_weight is None:
        return None
    return tf.constant([class_weight.get(index, 1.0) for index in range(num_classes)], tf.float32)


def with_sample_weights(x, y, class_weights):
    """(x, y), or (x, y, each image's class weight) as Keras' train_step unpacks it: what fit(class_weight=...) feeds."""
    if class_weights is None:
        return x, y
    classes = tf.argmax(y, axis=-1, output_type=tf.int32) if y.shape.rank > 1 else tf.cast(y, tf.int32)
    return x, y, tf.gather(class_weights, classes)


def compiled_steps(step, images, labels, prep, batch_size, parts=1, whole_step=None, class_weights=None, mix=None):
    """A function that runs `step` on batches first … first+count−1 of an epoch's `order`, and its compiled core.

    The images stay uint8 in one resident tensor; each batch is gathered, cast and
    scaled inside the compiled function, so no input pipeline runs beside the training.
    A last batch with fewer images than `parts` runs whole, through `whole_step`: a part
    would be empty, which TensorFlow's oneDNN pooling gradient does not survive.
    With `class_weights` (per_class_weights; whole batches only) each batch carries its images' weights.
    With `mix` (MixUp, CutMix: keras_fit.batch_mixer) each batch is mixed, its labels made soft, before the step.
    Returns (run, the tf.function that runs every other batch), the latter for TensorBoard's graph.
    """
    tf_logs.quiet_retracing()  # once, however many runs this process trains
    with tf.device(HOST):
        images = tf.convert_to_tensor(images)
        labels = tf.convert_to_tensor(labels)

    def compile_for(step):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)])
        def run(order, first, count):
            for index in tf.range(first, first + count):
                with tf.device(HOST):  # as with tf.data, the images stay in host memory and only a batch moves to a GPU
                    batch = order[index * batch_size:(index + 1) * batch_size]
                    x, y = preprocess_images(tf.gather(images, batch), prep), tf.gather(labels, batch)
                if mix is not None:
                    x, y = mix(x, y)
                step(with_sample_weights(x, y, class_weights))

        return run

    run_split = compile_for(step)
    steps = math.ceil(len(images) / batch_size)
    whole_last = 0 < len(images) % batch_size < parts
    run_last = compile_for(whole_step) if whole_last else None

    def run(order, first, count):
        split = min(count, steps - 1 - first) if whole_last else count
        if split > 0:
            run_split(order, tf.constant(first, tf.int32), tf.constant(split, tf.int32))
        if split < count:
            run_last(order, tf.constant(steps - 1, tf.int32), tf.constant(1, tf.int32))

    return run, run_split


def run_epoch(model, run, order, steps, steps_per_call, on_batch_begin, on_batch_end):
    """Runs `steps` batches, `steps_per_call` at a time, calling the batch callbacks around each call.

    As `fit` with `steps_per_execution`: `on_batch_begin` gets the call's first batch and
    `on_batch_end` its last, with the metrics so far; a callback may stop training
    (`model.stop_training`), which ends the epoch after that call.
    """
    for first in range(0, steps, steps_per_call):
        count = min(steps_per_call, steps - first)
        on_batch_begin(first)
        run(order, first, count)
        on_batch_end(first + count - 1, metrics_result(model))
        if model.stop_training:
            return


def epoch_orders(size, shuffle, seed):
    """A dataset whose every pass yields one epoch's order of the training images, as one tensor.

    It shuffles indices exactly as `array_batches.make_dataset` shuffles images (a buffer of
    the whole set, the same seed, reshuffled on each pass), so pass k is epoch k's order there too.
    """
    indices = tf.data.Dataset.range(size)
    if shuffle:
        indices = indices.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    return indices.batch(size)  # one element per pass; a per-element map here would cost seconds an epoch


def metrics_result(model):
    """The model's metrics as plain numbers, as `fit` hands them to callbacks at the end of an epoch."""
    return {name: float(value) if np.ndim(value) == 0 else np.asarray(value)
            for name, value in model.get_metrics_result().items()}
