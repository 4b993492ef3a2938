"""Training speed of `cnnlab train` against the plain-Keras seed script, side by side in one run, timed two ways.

Rounds alternate A (cnnlab) and B (bench/peers/seed000_keras.py), each in a fresh
process, on the same data, model, batch size and epochs; round k seeds both sides with
42 + k − 1, so the accuracy medians compare training, not one lucky seed (after 2 epochs
validation accuracy moves by about half a point from seed to seed). Both sides validate
on the same 12,000 images: the seed's own `train_test_split(..., test_size=0.2,
random_state=42)`, which the bench writes once to an .npz with x_val, y_val for cnnlab
(cnnlab's own split is stratified, so it would hold out other images).

Each round is timed two ways, the same way on both sides:
- fit: the whole `fit`, every callback's work included (checkpoints, cnnlab's backups):
  metrics.json's fit_time_s for A, the seed script's perf_counter around `model.fit` for B;
  as images/s, training images × epochs ÷ that time;
- process: the whole command, from start to exit (imports, data, model, fit, scoring the
  same 10,000 test images, loss and accuracy plots), perf_counter around the child process.
Both ratios are cnnlab's speed over plain Keras': above 1, cnnlab is faster. Also reports
final validation accuracy, test accuracy, peak RSS (from wait4), and the fraction of the
machine's float32 matmul rate (bench/machine_peak.py, measured in the same run) that the
fit reaches: training FLOPs per image × images/s ÷ matmul FLOP/s.

    python bench/train_speed.py [--config configs/fashion_mnist_cnn.yaml] [--epochs 2] [--rounds 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}
# Runs the child, timed from outside it, and reports its seconds and peak RSS (RUSAGE_CHILDREN of this wrapper)
WRAPPER = ("import json, resource, subprocess, sys, time; started = time.perf_counter(); p = subprocess.run(sys.argv[1:]); "
           "seconds = time.perf_counter() - started; print(json.dumps({'rc': p.returncode, 'seconds': seconds, "
           "'maxrss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}), file=sys.stderr)")


def run_child(args):
    process = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{process.stderr[-2000:]}")
    return process.stdout


def run_measured(args):
    """Runs a child process; returns its stdout, its seconds from start to exit, and its peak RSS in MiB."""
    process = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    report = json.loads(process.stderr.strip().splitlines()[-1])
    if report["rc"] != 0:
        sys.exit(f"{' '.join(map(str, args))} failed:\n{process.stderr[-3000:]}")
    return process.stdout, report["seconds"], report["maxrss_mib"]


def cnnlab_round(config, epochs, extra, seed):
    with tempfile.TemporaryDirectory() as runs_dir:
        _, seconds, rss = run_measured([sys.executable, "-m", "cnnlab.cli", "train", config, "--epochs", epochs, "-q",
                                        "--runs-dir", runs_dir, f"--set=seed={seed}", *extra])
        (run_dir,) = Path(runs_dir).iterdir()
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"fit_s": metrics["fit_time_s"], "images_per_s": metrics["num_train"] * metrics["fit_epochs"] / metrics["fit_time_s"],
            "process_s": seconds, "final_val_accuracy": metrics["final"]["val_accuracy"],
            "test_accuracy": metrics["test"]["accuracy"], "maxrss_mib": rss}


def keras_round(epochs, data, seed):
    with tempfile.TemporaryDirectory() as out:
        stdout, seconds, rss = run_measured([sys.executable, "bench/peers/seed000_keras.py", "--epochs", epochs, "--data", data,
                                             "--seed", str(seed), "--out", out])
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"fit_s": result["fit_seconds"], "images_per_s": result["images_per_s"], "process_s": seconds,
            "final_val_accuracy": result["final_val_accuracy"], "test_accuracy": result["test_accuracy"], "maxrss_mib": rss}


def fit_ratio(a, b):
    """cnnlab's images/s in fit over plain Keras'."""
    return a["images_per_s"] / b["images_per_s"]


def process_ratio(a, b):
    """How many times sooner cnnlab's whole command ends than the plain script's."""
    return b["process_s"] / a["process_s"]


def write_seed_split(data_folder, path):
    """The seed's 48k/12k split of the IDX training images, as an .npz cnnlab reads with its own validation split.

    train_test_split's permutation depends only on the sample count and random_state, so
    splitting indices gives exactly the images the seed's call on float arrays gives.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from cnnlab.data.sources import (FASHION_MNIST_CLASSES, IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC,
                                     find_idx_file, read_idx)

    folder = Path(data_folder)

    def read(key, magic):
        return read_idx(find_idx_file(folder, IDX_FILES[key]), magic)

    x, y = read("x_train", IDX_IMAGES_MAGIC), read("y_train", IDX_LABELS_MAGIC)
    train_index, val_index = train_test_split(np.arange(len(y)), test_size=0.2, random_state=42)
    np.savez(path, x_train=x[train_index], y_train=y[train_index], x_val=x[val_index], y_val=y[val_index],
             x_test=read("x_test", IDX_IMAGES_MAGIC), y_test=read("y_test", IDX_LABELS_MAGIC),
             class_names=np.array(FASHION_MNIST_CLASSES))
    return path


def training_flops_per_image(config_path):
    """Forward multiply-adds of Conv2D and Dense layers × 2 FLOPs, × 3 for forward + backward (2× forward)."""
    from cnnlab.model.builder import build_model
    from cnnlab.config.experiment import load_config

    model = build_model(load_config(config_path))
    forward = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            forward += 2 * kh * kw * c_in * c_out * h * w
        elif kind == "Dense":
            forward += 2 * layer.input.shape[-1] * layer.units
    return 3 * forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_cnn.yaml")
    parser.add_argument("--epochs", default="2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="seed of round 1; round k uses seed + k - 1, on both sides")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="the IDX folder both sides read (cnnlab through the seed's split)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for cnnlab (to try a setting)")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()  # removed when the bench exits
    split = write_seed_split(args.data, Path(scratch.name) / "seed000_split.npz")
    extra = ["--set=data.source=npz", f"--set=data.path={split}"] + [f"--set={s}" for s in args.sets]
    peak = json.loads(run_child([sys.executable, "bench/machine_peak.py"]))["matmul_gflops"] * 1e9
    flops = training_flops_per_image(args.config)
    rows = []
    for i in range(args.rounds):
        seed = args.seed + i  # a seed per round: after 2 epochs, accuracy varies by about half a point from seed to seed
        a = cnnlab_round(args.config, args.epochs, extra, seed)
        b = keras_round(args.epochs, args.data, seed)
        rows.append((a, b))
        print(f"round {i + 1} (seed {seed}): fit: cnnlab {a['fit_s']:5.1f} s ({a['images_per_s']:5.0f} images/s), "
              f"plain Keras {b['fit_s']:5.1f} s ({b['images_per_s']:5.0f} images/s), ratio {fit_ratio(a, b):.2f};   "
              f"process: cnnlab {a['process_s']:5.1f} s, plain Keras {b['process_s']:5.1f} s, ratio {process_ratio(a, b):.2f};   "
              f"val accuracy {a['final_val_accuracy']:.4f} / {b['final_val_accuracy']:.4f}", flush=True)

    median = lambda key, side: statistics.median(r[side][key] for r in rows)
    fit_ratios = [fit_ratio(a, b) for a, b in rows]
    process_ratios = [process_ratio(a, b) for a, b in rows]
    a_ips, b_ips = median("images_per_s", 0), median("images_per_s", 1)
    per_round = lambda ratios: " / ".join(f"{r:.2f}" for r in ratios)
    print()
    print(f"{'':34}{'cnnlab':>12}{'plain Keras':>14}")
    print(f"{'fit: seconds (median)':34}{median('fit_s', 0):12.1f}{median('fit_s', 1):14.1f}")
    print(f"{'fit: images/s (median)':34}{a_ips:12.0f}{b_ips:14.0f}")
    print(f"{'process: seconds (median)':34}{median('process_s', 0):12.1f}{median('process_s', 1):14.1f}")
    print(f"{'final val accuracy (median)':34}{median('final_val_accuracy', 0):12.4f}{median('final_val_accuracy', 1):14.4f}")
    print(f"{'test accuracy (median)':34}{median('test_accuracy', 0):12.4f}{median('test_accuracy', 1):14.4f}")
    print(f"{'peak RSS MiB (max)':34}{max(r[0]['maxrss_mib'] for r in rows):12.0f}{max(r[1]['maxrss_mib'] for r in rows):14.0f}")
    print(f"{'fit: fraction of matmul limit':34}{flops * a_ips / peak:12.1%}{flops * b_ips / peak:14.1%}")
    print()
    print(f"ratio cnnlab / plain Keras, fit to fit (images/s):      median {statistics.median(fit_ratios):.2f}  (rounds {per_round(fit_ratios)})")
    print(f"ratio cnnlab / plain Keras, process to process (1/time): median {statistics.median(process_ratios):.2f}  "
          f"(rounds {per_round(process_ratios)})")
    print(f"\ntraining FLOPs per image {flops / 1e6:.1f} M; float32 matmul {peak / 1e9:.0f} GFLOP/s; "
          f"{args.rounds} rounds of {args.epochs} epochs; {args.config}")
    print("command: " + " ".join(["python", "bench/train_speed.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
