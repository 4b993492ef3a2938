"""The float32 matmul rate TensorFlow sustains on this machine: the "machine limit" of bench/train_speed.py.

A square float32 matmul is the most favourable dense kernel TensorFlow has on a CPU,
so its rate is a practical ceiling for training throughput (FLOPs per image × images/s).
Prints one JSON line: {"matmul_gflops": median of the timed rounds, ...}.

    python bench/machine_peak.py [--size 2048] [--rounds 7]
"""

import argparse
import json
import statistics
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=10, help="matmuls per timed round")
    args = parser.parse_args()

    import tensorflow as tf

    n = args.size
    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)

    @tf.function
    def chain(a, b):
        c = a
        for _ in range(args.repeat):
            c = tf.matmul(c, b) * 1e-3  # keep values finite; the scale is negligible work
        return c

    chain(a, b).numpy()  # trace and warm up
    rates = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        chain(a, b).numpy()
        seconds = time.perf_counter() - started
        rates.append(2 * n**3 * args.repeat / seconds / 1e9)
    print(json.dumps({"matmul_gflops": statistics.median(rates), "size": n, "rounds": args.rounds,
                      "min_gflops": min(rates), "max_gflops": max(rates), "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU"}))


if __name__ == "__main__":
    main()
