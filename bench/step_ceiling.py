"""The fastest a batch-32 training step of a config's model can run here: the ceiling for any fit-based tool.

A compiled `tf.function` step (forward, gradients, Adam update) on one batch already in
memory, repeated in a graph loop: no input pipeline, no Keras `fit` loop, no callbacks,
no validation, no return to Python between steps. Whatever
a tool does around the step, its images/s cannot exceed this. Three ways, each in a
process of its own: a graph step (what `fit` runs), the same under XLA, and the batch
split into two halves computed side by side with one thread per operation (what
cnnlab's loop runs on a multi-core CPU, cnnlab/training/tf_loop.py).

    python bench/step_ceiling.py [--config configs/fashion_mnist_cnn.yaml] [--batch-size 32] [--steps 400]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def measure(config_path, batch_size, steps, mode):
    import tensorflow as tf

    if mode == "split":  # before TensorFlow starts: one thread per operation, the halves run side by side
        tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras

    from cnnlab.model.builder import build_model
    from cnnlab.config.experiment import load_config

    config = load_config(config_path)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    optimizer = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    x = tf.random.uniform((batch_size, *config.model.input_shape))
    y = tf.random.uniform((batch_size,), maxval=model.output_shape[-1], dtype=tf.int32)

    weights = model.trainable_variables
    halves = 2 if mode == "split" else 1

    @tf.function(jit_compile=mode == "xla")
    def step(x, y):
        total = [0.0] * len(weights)
        for part_x, part_y in zip(tf.split(x, halves), tf.split(y, halves)):
            with tf.GradientTape() as tape:
                loss = loss_fn(part_y, model(part_x, training=True))
            total = [t + g / halves for t, g in zip(total, tape.gradient(loss, weights))]
        optimizer.apply_gradients(zip(total, weights))
        return loss

    @tf.function
    def repeat(count):  # the steps loop inside the graph, as in cnnlab's loop: no Python between steps
        for _ in tf.range(count):
            step(x, y)

    repeat(tf.constant(30))
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        repeat(tf.constant(steps // 5))
        rates.append(batch_size * (steps // 5) / (time.perf_counter() - started))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_cnn.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--mode", choices=["graph", "xla", "split"], help="measure one way only, in this process")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps({"mode": args.mode, "images_per_s": round(measure(args.config, args.batch_size, args.steps, args.mode))}))
        return
    result = {}
    for mode in ("graph", "xla", "split"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--config", args.config, "--batch-size", str(args.batch_size),
                              "--steps", str(args.steps)], capture_output=True, text=True, check=True).stdout
        result[f"images_per_s_{mode}"] = json.loads(out.strip().splitlines()[-1])["images_per_s"]
    print(json.dumps({"config": args.config, "batch_size": args.batch_size, **result}))


if __name__ == "__main__":
    main()
