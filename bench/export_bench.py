"""Export figures for issue 15: each format's size and agreement with best.keras, and the interpreters' images/s.

Exports a run in every format (`cnnlab export RUN --format all --output TMP`, timed) and
reads each format's size, top-1 agreement and accuracy from export.json. Then, in this
process, runs each exported file and best.keras on the run's held-out images with the
cores this process may use (2 on the project machine): images/s at batch 1 (one image per
call, as an app classifying one photo) and at batch 32, the median (and range) of --repeats
passes over up to --images images each, after one warm-up pass; the passes go round the
models in turn, so that a shared machine's swings fall on all of them alike.

Give a run folder, or a config to train first (into a temporary folder, with --epochs):

    python bench/export_bench.py RUN_DIR
    python bench/export_bench.py --config configs/fashion_mnist_cnn.yaml --epochs 2
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
BATCHES = (1, 32)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}
sys.path.insert(0, str(ROOT))


def cnnlab(*args):
    """Runs one cnnlab command in a fresh process; returns (wall seconds, stdout)."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True,
                             env=ENV, cwd=ROOT)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"cnnlab {' '.join(map(str, args))} failed:\n{process.stdout[-2000:]}\n{process.stderr[-2000:]}")
    return seconds, process.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a completed run folder")
    parser.add_argument("--config", help="train this config first (into a temporary runs folder)")
    parser.add_argument("--epochs", type=int, default=2, help="with --config: epochs to train")
    parser.add_argument("--images", type=int, default=2000, help="held-out images per timing pass")
    parser.add_argument("--repeats", type=int, default=5, help="timing passes per figure (median, with the range)")
    args = parser.parse_args()
    if (args.run_dir is None) == (args.config is None):
        parser.error("give RUN_DIR or --config CONFIG")

    from cnnlab.runtime.tf_logs import import_tensorflow

    import_tensorflow()
    from cnnlab.runtime.cores import usable_cores
    from cnnlab.rundir.held_out import load_split
    from cnnlab.deploy.inference import load_exported
    from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
    from cnnlab.rundir.trained import load_trained_run

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        run_dir = args.run_dir
        if args.config:
            seconds, _ = cnnlab("train", args.config, "--epochs", args.epochs, "--runs-dir", work / "runs", "-q")
            (run_dir,) = (work / "runs").iterdir()
            print(f"trained {args.config} for {args.epochs} epochs in {seconds:.0f} s: {run_dir.name}")
        export_seconds, _ = cnnlab("export", run_dir, "--format", "all", "--output", work / "export")
        record = json.loads((work / "export" / "export.json").read_text())
        run = load_trained_run(run_dir)
        held_out = load_split(run, None)
        images = held_out.images[:args.images]
        cores = usable_cores()
        print(f"run: {run_dir}; checked on {held_out.description} ({len(held_out.images)} images); "
              f"export of all four formats: {export_seconds:.1f} s (one process, TensorFlow start included)")
        print(f"timing: {len(images)} images a pass, median of {args.repeats} passes, {cores} cores\n")

        prep = preprocessing_from_record(run.preprocessing)
        keras_accuracy = next(iter(record["formats"].values()))["check"]["accuracy_best_keras"]
        # (label, interpreter, predict, size, its export.json check): best.keras as cnnlab predict calls it, then each file
        models = [("best.keras (predict_on_batch)", "-", lambda x: run.model.predict_on_batch(preprocess_images(x, prep)),
                   human(Path(run_dir, "best.keras").stat().st_size),
                   {"top1_agreement": None, "accuracy_exported": keras_accuracy, "accuracy_change": None})]
        for name, entry in record["formats"].items():
            for interpreter in (["litert", "tensorflow"] if name != "savedmodel" else [None]):
                try:
                    model = load_exported(work / "export" / entry["file"], interpreter=interpreter)
                except Exception as exc:  # LiteRT not installed: measure what is
                    print(f"{name} with {interpreter}: skipped: {exc}")
                    continue
                models.append((name, model.runner.name, model.predict, human(entry["size_bytes"]), entry["check"]))
        speeds = {(i, batch): [] for i in range(len(models)) for batch in BATCHES}
        for _, _, predict, _, _ in models:
            for batch in BATCHES:
                one_pass(predict, images, batch)  # warm-up: tracing, delegate set-up, first allocation
        load = os.getloadavg()[0]
        for _ in range(args.repeats):  # round-robin, so that the shared machine's swings hit every model alike
            for i, (_, _, predict, _, _) in enumerate(models):
                for batch in BATCHES:
                    speeds[i, batch].append(one_pass(predict, images, batch))
        print(f"load average (1 min) before/after timing: {load:.1f} / {os.getloadavg()[0]:.1f}\n")

        print("| format | size | top-1 agreement | accuracy | change | interpreter | images/s, batch 1 | images/s, batch 32 |")
        print("|---|---:|---:|---:|---:|---|---:|---:|")
        for i, (name, interpreter, _, size, check) in enumerate(models):
            agreement = f"{check['top1_agreement']:.2%}" if check["top1_agreement"] is not None else "-"
            change = f"{check['accuracy_change']:+.4f}" if check["accuracy_change"] is not None else "-"
            rates = [f"{statistics.median(speeds[i, batch]):,.0f} ({min(speeds[i, batch]):,.0f}-{max(speeds[i, batch]):,.0f})"
                     for batch in BATCHES]
            print(f"| {name} | {size} | {agreement} | {check['accuracy_exported']:.4f} | {change} | {interpreter} "
                  f"| {rates[0]} | {rates[1]} |")


def one_pass(predict, images, batch):
    """images/s of `predict` over `images` in batches of `batch`."""
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        predict(images[start:start + batch])
    return len(images) / (time.perf_counter() - started)


def human(size):
    return f"{size / 1024:,.1f} KB" if size < 1024 ** 2 else f"{size / 1024 ** 2:,.2f} MB"


if __name__ == "__main__":
    main()
