"""The fastest a batch-32 training step of a config's model can run here: the ceiling for any fit-based tool.

A compiled `tf.function` step (forward, gradients, Adam update) on one batch already in
memory: no input pipeline, no Keras `fit` loop, no callbacks, no validation. Whatever
cnnlab does around `fit`, its images/s cannot exceed this. Run with and without XLA.

    python bench/step_ceiling.py [--config configs/fashion_mnist_cnn.yaml] [--batch-size 32] [--steps 400]
"""

import argparse
import json
import statistics
import time


def measure(config_path, batch_size, steps, jit):
    import keras
    import tensorflow as tf

    from cnnlab.builder import build_model
    from cnnlab.config import load_config

    config = load_config(config_path)
    keras.utils.set_random_seed(0)
    model = build_model(config)
    optimizer = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    x = tf.random.uniform((batch_size, *config.model.input_shape))
    y = tf.random.uniform((batch_size,), maxval=model.output_shape[-1], dtype=tf.int32)

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(30):
        step(x, y)
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(steps // 5):
            loss = step(x, y)
        float(loss)
        rates.append(batch_size * (steps // 5) / (time.perf_counter() - started))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_cnn.yaml")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    result = {f"images_per_s_{'xla' if jit else 'graph'}": round(measure(args.config, args.batch_size, args.steps, jit))
              for jit in (False, True)}
    print(json.dumps({"config": args.config, "batch_size": args.batch_size, **result}))


if __name__ == "__main__":
    main()
