"""What logging costs a run: TensorBoard (epoch-level, batch-level) and MLflow tracking, against none.

Trains configs/digits_cnn.yaml (early stopping off, a fixed number of epochs) with each
setting, `--repeats` times, interleaved, and reports each setting's median wall time of the
whole command and its median training time (metrics.json's fit_time_s: `fit` with every callback,
the logging's included),
each as a ratio to no logging. Batch-level TensorBoard (`update_freq: 1`) makes
`steps_per_execution: auto` one batch a call, which is most of its cost for a small model.

    python bench/logging_cost.py [--epochs 10] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}
SETTINGS = {
    "none": [],
    "tensorboard (epoch)": ["--set", "train.callbacks.tensorboard={}"],
    "tensorboard (update_freq: 1)": ["--set", "train.callbacks.tensorboard={update_freq: 1}"],
    "mlflow (local sqlite)": ["--mlflow"],
}


def train_once(work, extra, epochs):
    runs_dir = Path(tempfile.mkdtemp(dir=work))
    args = [sys.executable, "-m", "cnnlab.cli", "train", str(ROOT / "configs" / "digits_cnn.yaml"), "-q",
            "--runs-dir", str(runs_dir), "--epochs", str(epochs), "--set", "train.callbacks.early_stopping=null", *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=work)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stdout[-1000:]}{result.stderr[-2000:]}")
    (run_dir,) = [path for path in runs_dir.iterdir() if (path / "metrics.json").is_file()]
    return wall, json.loads((run_dir / "metrics.json").read_text())["fit_time_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for name, extra in SETTINGS.items():
                times[name].append(train_once(work, extra, args.epochs))
    base_wall = statistics.median(wall for wall, _ in times["none"])
    base_train = statistics.median(train for _, train in times["none"])
    print(f"digits_cnn, {args.epochs} epochs, median of {args.repeats} (interleaved), {os.cpu_count()} CPUs\n")
    print("| logging | command wall (s) | × none | training (s) | × none |")
    print("|---|--:|--:|--:|--:|")
    for name, pairs in times.items():
        wall = statistics.median(w for w, _ in pairs)
        train = statistics.median(t for _, t in pairs)
        print(f"| {name} | {wall:.1f} | {wall / base_wall:.2f} | {train:.2f} | {train / base_train:.2f} |")


if __name__ == "__main__":
    main()
