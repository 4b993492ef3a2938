"""Training speed of `cnnlab train` on each Keras backend against plain Keras `fit` on the same backend.

For each backend: `cnnlab train CONFIG --backend B` and bench/peers/backend_fit.py (the same
model, plain `fit` on float32 arrays) each once, in a fresh process, on the same subset of
Fashion-MNIST (an .npz of the first --train training images and the next --val as its own
validation split) for the same epochs. images/s is training images ÷ an epoch's seconds
(training and validation, as history.csv times them), for the last epoch (the first also
compiles) and over all epochs. One run each: the machine's other load shows in the figures.

    python bench/backends_bench.py [--config configs/fashion_mnist_cnn.yaml] [--epochs 2] [--train 12000] [--val 3000]
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("tensorflow", "jax", "torch")


def run(args, backend):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1", "KERAS_BACKEND": backend,
           "PYTHONPATH": str(ROOT)}
    process = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)
    if process.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} ({backend}) failed:\n{process.stderr[-3000:]}")
    return process.stdout


def write_subset(path, train, val):
    import numpy as np

    from cnnlab.data.sources import (IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, SYSTEM_DATASETS_DIR, find_idx_file,
                                     read_idx)

    folder = SYSTEM_DATASETS_DIR / "fashion-mnist"
    x = read_idx(find_idx_file(folder, IDX_FILES["x_train"]), IDX_IMAGES_MAGIC)
    y = read_idx(find_idx_file(folder, IDX_FILES["y_train"]), IDX_LABELS_MAGIC)
    np.savez(path, x_train=x[:train], y_train=y[:train], x_val=x[train:train + val], y_val=y[train:train + val])


def cnnlab_side(config, data, epochs, backend, runs_dir):
    run(["-m", "cnnlab.cli", "train", config, "--backend", backend, "--epochs", epochs, "-q", "--runs-dir", runs_dir,
         "--set", "data.source=npz", "--set", f"data.path={data}", "--set", "train.callbacks.early_stopping=null"], backend)
    (run_dir,) = Path(runs_dir).iterdir()
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [float(row["time_s"]) for row in rows], float(rows[-1]["val_accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_cnn.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train", type=int, default=12000)
    parser.add_argument("--val", type=int, default=3000)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "subset.npz"
        write_subset(data, args.train, args.val)
        for backend in args.backends.split(","):
            runs_dir = Path(tmp) / backend
            ours, our_acc = cnnlab_side(args.config, data, args.epochs, backend, runs_dir)
            theirs = json.loads(run(["bench/peers/backend_fit.py", args.config, data, args.epochs], backend).strip().splitlines()[-1])
            row = {"backend": backend,
                   "cnnlab_last": args.train / ours[-1], "fit_last": args.train / theirs["epoch_s"][-1],
                   "cnnlab_all": args.train * len(ours) / sum(ours), "fit_all": args.train * len(theirs["epoch_s"]) / sum(theirs["epoch_s"]),
                   "cnnlab_val_acc": our_acc, "fit_val_acc": theirs["val_accuracy"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.train} training and {args.val} validation images, {args.epochs} epochs, batch as in {args.config}")
    print("| backend | cnnlab images/s (last epoch) | Keras fit images/s (last epoch) | ratio | over all epochs (with compiling): cnnlab / fit | val accuracy cnnlab / fit |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['cnnlab_last']:.0f} | {r['fit_last']:.0f} | {r['cnnlab_last'] / r['fit_last']:.2f} | "
              f"{r['cnnlab_all']:.0f} / {r['fit_all']:.0f} | {r['cnnlab_val_acc']:.4f} / {r['fit_val_acc']:.4f} |")


if __name__ == "__main__":
    main()
