"""The three figures issue 14 asks of `cnnlab sweep`, on the shipped digits example (configs/digits_cnn.yaml).

1. time: the shipped sweep (20 trials) end to end, `cnnlab sweep configs/digits_cnn.yaml`;
2. pruning: the same sweep with the median pruner against `pruner: none`, at sampler seeds
   S, S+1, S+2: total epochs trained and best validation accuracy (median of the seeds);
3. parallel: `--jobs 2` against `--jobs 1`, trials finished per hour of wall time.

Each sweep runs as its own `cnnlab sweep` process in a temporary runs folder; figures come
from its trials.csv and the trials' history.csv files.

    python bench/sweep_bench.py [--seeds 3] [--trials 20] [--parts time,pruning,jobs]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_cnn.yaml"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}


def sweep(runs_dir, *args):
    """Runs one sweep; returns (wall seconds, its trials.csv rows, the sweep folder)."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "cnnlab.cli", "sweep", str(CONFIG), "--runs-dir", str(runs_dir), *args],
                             capture_output=True, text=True, env=ENV, cwd=ROOT)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"cnnlab sweep {' '.join(args)} failed:\n{process.stdout[-2000:]}\n{process.stderr[-2000:]}")
    (sweep_dir,) = Path(runs_dir).glob("sweep-*")
    with open(sweep_dir / "trials.csv", newline="") as f:
        return seconds, list(csv.DictReader(f)), sweep_dir


def epochs_and_best_accuracy(rows):
    """Epochs trained over every trial, and the best validation accuracy any trial reached."""
    epochs, best = 0, 0.0
    for row in rows:
        if not row["run_dir"]:
            continue
        with open(Path(row["run_dir"]) / "history.csv", newline="") as f:
            history = list(csv.DictReader(f))
        epochs += len(history)
        best = max([best] + [float(h["val_accuracy"]) for h in history])
    return epochs, best


def finished(rows):
    return sum(row["state"] in ("complete", "pruned") for row in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parts", default="time,pruning,jobs")
    args = parser.parse_args()
    parts = args.parts.split(",")
    report = {"trials": args.trials, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "time" in parts:
            seconds, rows, _ = sweep(tmp / "time", "--trials", str(args.trials))
            report["time"] = {"seconds": round(seconds, 1), "finished": finished(rows),
                              "pruned": sum(row["state"] == "pruned" for row in rows)}
            print(f"time: {args.trials} trials in {seconds:.0f} s ({report['time']['pruned']} pruned)", flush=True)
        if "pruning" in parts:
            rounds = []
            for k in range(args.seeds):
                seed = args.seed + k
                figures = {}
                for pruner in ("median", "none"):
                    _, rows, _ = sweep(tmp / f"prune-{pruner}-{seed}", "--trials", str(args.trials),
                                       "--set", f"sweep.seed={seed}", "--set", f"sweep.pruner={pruner}")
                    figures[pruner] = epochs_and_best_accuracy(rows)
                saved = 1 - figures["median"][0] / figures["none"][0]
                rounds.append({"seed": seed, "epochs_median": figures["median"][0], "epochs_none": figures["none"][0],
                               "fewer_epochs": round(saved, 3), "best_val_accuracy_median": figures["median"][1],
                               "best_val_accuracy_none": figures["none"][1]})
                print(f"pruning, seed {seed}: {figures['median'][0]} epochs against {figures['none'][0]} "
                      f"({saved:.0%} fewer); best val accuracy {figures['median'][1]:.4f} against {figures['none'][1]:.4f}", flush=True)
            report["pruning"] = {"rounds": rounds,
                                 "median_fewer_epochs": statistics.median(r["fewer_epochs"] for r in rounds),
                                 "median_accuracy_difference_points": round(100 * statistics.median(
                                     r["best_val_accuracy_median"] - r["best_val_accuracy_none"] for r in rounds), 2)}
        if "jobs" in parts:
            rates = {}
            for jobs in (1, 2):
                seconds, rows, _ = sweep(tmp / f"jobs-{jobs}", "--trials", str(args.trials), "--jobs", str(jobs))
                rates[jobs] = finished(rows) / seconds * 3600
                print(f"--jobs {jobs}: {finished(rows)} trials in {seconds:.0f} s = {rates[jobs]:.0f} trials/hour", flush=True)
            report["jobs"] = {"trials_per_hour": rates, "ratio": round(rates[2] / rates[1], 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
