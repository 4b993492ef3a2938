"""Where the seconds of a short `cnnlab train` go, outside training: start-up, set-up, scoring, plots, exit.

Runs `cnnlab train CONFIG --epochs N -q` `--repeats` times, each in a fresh process timed
from outside (perf_counter around subprocess.run), and inside it times the stages of
the command by wrapping cnnlab's own functions (no profiler, so no profiler overhead):
interpreter start to cnnlab's CLI, importing TensorFlow and Keras, loading the data,
building the model, the fit (of which the epochs, and each of the run's callbacks), scoring
the test split, plots, and exit (the outside time less the last stage's end). Then one
more run under `python -X importtime` gives the import time by top-level package, and who
imported it first (a package imported only by TensorFlow or Keras is not cnnlab's to cut).

    python bench/startup.py [--config configs/digits_cnn.yaml] [--epochs 1] [--repeats 3]
"""

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}
# (label, module, function): each call's seconds are added up under its label
STAGES = (
    ("import TensorFlow and Keras", "cnnlab.runtime.backend", "start"),
    ("import cnnlab.training.train and its modules", None, None),  # measured around the import, below
    ("load config", "cnnlab.config.experiment", "load_config"),
    ("load data", "cnnlab.data.sources", "load_dataset"),
    ("build and compile the model", "cnnlab.model.builder", "validate"),
    ("steps per call (auto)", "cnnlab.training.job", "resolve_steps"),
    ("run folder description", "cnnlab.training.train", "write_run_description"),
    ("fit (all callbacks)", "cnnlab.training.train", "fit_on_device"),
    ("score and record the run", "cnnlab.training.train", "finish_run"),
    ("  score: load best.keras", "keras.models", "load_model"),
    ("  score: plots", "cnnlab.training.records", "write_plots"),
)


def process_age():
    """Seconds since this process started, by the kernel's clock (Linux)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def child(args):
    """Runs the command in this process with its stages timed; prints one JSON line of seconds per stage."""
    import importlib

    at_start = process_age()
    clock0 = time.perf_counter() - at_start  # perf_counter's reading at process start
    seconds = collections.Counter()
    ends = []

    def timed(label, function):
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return function(*a, **kw)
            finally:
                seconds[label] += time.perf_counter() - started
                ends.append(time.perf_counter() - clock0)
        return wrapper

    import cnnlab.cli as cli
    seconds["interpreter start to cnnlab's CLI"] = time.perf_counter() - clock0
    from cnnlab.runtime import backend

    backend.start = timed("import TensorFlow and Keras", backend.start)
    backend.start()
    started = time.perf_counter()
    import cnnlab.training.train  # noqa: F401  (what `cnnlab train` imports after Keras)
    seconds["import cnnlab.training.train and its modules"] = time.perf_counter() - started
    for label, module, name in STAGES[2:]:
        owner = importlib.import_module(module)
        setattr(owner, name, timed(label, getattr(owner, name)))
    time_each_callback(seconds)
    try:
        cli.main(["train", args.config, "--epochs", str(args.epochs), "-q", "--runs-dir", args.runs_dir], standalone_mode=False)
    finally:
        (run_dir,) = Path(args.runs_dir).iterdir()
        history = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
        column = history[0].index("time_s")
        seconds["  fit: the epochs (history.csv time_s)"] = sum(float(row[column]) for row in history[1:])
        seconds["end of the command's work"] = max(ends)
        print(json.dumps(seconds), flush=True)


def time_each_callback(seconds):
    """Adds up, per callback class, the time its epoch and train hooks take (what the fit spends outside its epochs)."""
    from cnnlab.training import callbacks

    make = callbacks.make_callbacks

    def timed_make(*args, **kwargs):
        made = make(*args, **kwargs)
        for callback in made:
            for hook in ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end"):
                setattr(callback, hook, timed_hook(getattr(callback, hook), f"  fit: callback {type(callback).__name__}"))
        return made

    def timed_hook(function, label):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - started
        return wrapper

    callbacks.make_callbacks = timed_make


def run_once(config, epochs):
    with tempfile.TemporaryDirectory() as runs_dir:
        command = [sys.executable, __file__, "--child", "--config", config, "--epochs", str(epochs), "--runs-dir", runs_dir]
        started = time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
        outside = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr[-3000:]}")
    stages = json.loads(process.stdout.strip().splitlines()[-1])
    end = stages.pop("end of the command's work")
    stages["everything else before the end of the work"] = end - sum(v for k, v in stages.items() if not k.startswith(" "))
    stages["exit (after the command's work)"] = outside - end
    stages["whole process, timed from outside"] = outside
    return stages


def import_times(config, epochs):
    """Self time of every module imported by `cnnlab train`, by top-level package, and which package imported it first."""
    with tempfile.TemporaryDirectory() as runs_dir:
        process = subprocess.run([sys.executable, "-X", "importtime", "-m", "cnnlab.cli", "train", config, "--epochs", str(epochs),
                                  "-q", "--runs-dir", runs_dir], capture_output=True, text=True, env=ENV, cwd=ROOT)
    pattern = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)")
    entries = [(int(m[1]), len(m[2]), m[3]) for m in map(pattern.match, process.stderr.splitlines()) if m]
    by_package = collections.Counter()
    importer = {}
    for i, (self_us, depth, name) in enumerate(entries):
        package = name.split(".")[0]
        by_package[package] += self_us / 1e6
        if package in importer:
            continue
        # the modules that imported it are the later lines of smaller depth; the first one of another package
        for _, parent_depth, parent in entries[i + 1:]:
            if parent_depth < depth:
                depth = parent_depth
                if parent.split(".")[0] != package:
                    importer[package] = parent.split(".")[0]
                    break
        else:
            importer[package] = "(the command)"
    return by_package, importer


def in_order(labels):
    """The stages as they happen, each one's parts (`  fit: ...`, `  score: ...`) straight after it."""
    parents = {"fit": "fit (all callbacks)", "score": "score and record the run"}
    parts = [label for label in labels if label.startswith(" ")]
    ordered = []
    for label in labels:
        if label.startswith(" "):
            continue
        ordered.append(label)
        ordered += [part for part in parts if parents.get(part.strip().split(":")[0]) == label]
    return ordered


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/digits_cnn.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    rounds = [run_once(args.config, args.epochs) for _ in range(args.repeats)]
    print(f"cnnlab train {args.config} --epochs {args.epochs} -q: median of {args.repeats} fresh processes, {os.cpu_count()} CPUs\n")
    print("| stage | seconds (median) | runs |")
    print("|---|--:|---|")
    for label in in_order(dict.fromkeys(label for r in rounds for label in r)):
        values = [r.get(label, 0.0) for r in rounds]
        print(f"| {label} | {statistics.median(values):.2f} | {' / '.join(f'{v:.2f}' for v in values)} |")

    by_package, importer = import_times(args.config, args.epochs)
    print("\nImport time by top-level package (self time, one run under -X importtime, which adds its own overhead):\n")
    print("| package | seconds | first imported by |")
    print("|---|--:|---|")
    for package, seconds in by_package.most_common(15):
        print(f"| {package} | {seconds:.2f} | {importer.get(package, '?')} |")
    print(f"| (all) | {sum(by_package.values()):.2f} | |")


if __name__ == "__main__":
    main()
