"""Train every shipped config to completion on its real data, where the data is on this machine, and write RESULTS.md.

Each result stands beside the figure its seed notebook printed. Data that is not here
(MNIST has no offline package; rgb100_binary needs the user's own photos) is reported
as skipped with the reason, never faked.

    python bench/reproduce.py [--runs-dir runs/reproduce] [--only fashion_mnist_cnn] [--output RESULTS.md]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}

# config → (the seed's figure, what it measures, the number to compare with: "val" or "test")
SEED_FIGURES = {
    "digits_cnn": (None, "no printed figure (seed 001 only draws filters and feature maps)", None),
    "fashion_mnist_cnn": (0.9248, "seed 000: best val_accuracy 0.9258, model.evaluate on val 0.9248", "val"),
    "mnist_3conv": (0.9919, "seed 003: test accuracy 0.9919 after 5 epochs", "test"),
    "lenet5": (0.9905, "LeCun et al. 1998: 0.95% test error", "test"),
    "mnist_mlp": (None, "seed 002 prints no accuracy", None),
    "rgb100_binary": (0.64, "seed 004: about 64% on the author's own photos", "val"),
}


def data_missing(config_path):
    """The reason the config's data is not on this machine, or None when it loads."""
    from cnnlab.config.experiment import load_config
    from cnnlab.data.sources import load_arrays
    from cnnlab.errors import CnnlabError

    try:
        load_arrays(load_config(config_path).data)
    except CnnlabError as exc:
        return str(exc)
    return None


def train(config_path, runs_dir):
    result = subprocess.run([sys.executable, "-m", "cnnlab.cli", "train", str(config_path), "-q", "--runs-dir", str(runs_dir)],
                            capture_output=True, text=True, env=ENV, cwd=ROOT)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1]
    run_dir = Path(result.stdout.split("Run: ", 1)[1].splitlines()[0])
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


def row(name, metrics, detail):
    figure, source, compare = SEED_FIGURES.get(name, (None, "", None))
    if metrics is None:
        return f"| `{name}` | skipped: {detail} | | | | | {source} | |"
    val = metrics["best"].get("val_accuracy")
    test = (metrics["test"] or {}).get("accuracy")
    ours = {"val": val, "test": test}.get(compare)
    verdict = "" if figure is None or ours is None else ("yes" if ours >= figure else f"no ({ours - figure:+.4f})")
    fmt = lambda v: "" if v is None else f"{v:.4f}"
    return (f"| `{name}` | {metrics['num_train']:,} train / {metrics['num_val']:,} val / {metrics['num_test']:,} test | "
            f"{metrics['epochs_run']} (best {metrics['best_epoch']}) | {fmt(val)} | {fmt(test)} | {metrics['fit_time_s']:.0f} s | {source} | {verdict} |")


def main():
    os.environ.update(ENV)  # the in-process data check must not try a download either
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/reproduce")
    parser.add_argument("--only", action="append", help="config name(s) to run; default all")
    parser.add_argument("--output", default="RESULTS.md")
    args = parser.parse_args()

    lines = ["| config | data | epochs | best val acc | test acc | training time | seed's figure | reached |", "|---|---|---|---|---|---|---|---|"]
    for config_path in sorted((ROOT / "configs").glob("*.yaml")):
        name = config_path.stem
        if args.only and name not in args.only:
            continue
        missing = data_missing(config_path)
        if missing:
            print(f"{name}: skipped: {missing}", flush=True)
            lines.append(row(name, None, missing))
            continue
        print(f"{name}: training ...", flush=True)
        metrics, detail = train(config_path, ROOT / args.runs_dir)
        print(f"{name}: {'failed: ' + detail if metrics is None else 'done in ' + str(detail)}", flush=True)
        lines.append(row(name, metrics, detail))

    text = (f"# Reproduced results\n\nEvery shipped config trained to completion (its own epochs and early stopping) by "
            f"`python bench/reproduce.py` on {date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"no GPU. \"reached\" compares with the seed's figure (val or test, as the seed measured it).\n\n" + "\n".join(lines) + "\n")
    (ROOT / args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
