"""When splitting a batch into parts pays off: cnnlab's training images/s with whole batches against 2, 4, … parts.

For each batch size, and each part count up to the cores there are (2 on one core, to see
what a split costs with nothing to gain), a process of its own (TensorFlow fixes its
threads when it starts) trains the config's model with cnnlab's own loop (`loop.fit`,
`train_step_on_parts`), its threads set by `loop.share_cores` as `cnnlab train` sets
them: one warm-up epoch (tracing, first calls), then --epochs epochs timed without their
validation, of which it reports the median images/s. Each point is measured in --repeats
such processes, whole batches and their splits one after another within a repeat, so that
a busy spell of a shared machine hits a pair rather than one side; a point's figure is the
median of its repeats, and a split's ratio the median of its ratios to whole batches of
the same repeat. The cores are the process's core budget (`cnnlab.cores`: its affinity),
so under taskset the same script measures any core count:

    python bench/split_rule.py --out split.json                  # the cores this process may use
    taskset -c 0 python bench/split_rule.py --out split_0.json   # 1 core
    for c in 0 0-1 0-3 0-7 0-15; do taskset -c $c python bench/split_rule.py --quick --out split_$c.json; done
    python bench/split_rule.py --show split_*.json               # their tables again

--quick measures batch sizes 8, 32 and 128, one process a point with shorter epochs, so
that the whole 1-to-16-core sweep above takes a few minutes. The training images are the
config's own where they load (offline), else random images of the same shape, which train
as fast: these layers' cost does not depend on pixel values. The JSON says which.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's cnnlab, also where it is not installed

from cnnlab.runtime.cores import affinity_cores, usable_cores  # noqa: E402  (imports no TensorFlow)

BATCH_SIZES = (8, 16, 32, 64, 128)
QUICK_BATCH_SIZES = (8, 32, 128)
SMALLEST_PART = 4  # the smallest part measured: a batch of 8 in halves
IMAGES_PER_EPOCH, MIN_STEPS = 3200, 50  # an epoch: 3,200 images or 50 steps, whichever is more: 300-2,400 timed steps a point
QUICK_IMAGES_PER_EPOCH, QUICK_MIN_STEPS = 1024, 16
BUSY, BUSY_TRIES = 0.2, 2  # measure again, once, where other processes kept over 20% of the cores busy meanwhile
PAYS_OFF = 1.05  # a split "pays off" at 5% more images/s than whole batches: less is within this machine's noise
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "-1"}  # CPU only: the rule is for CPUs


def part_counts(cores, batch_size):
    """1, 2, 4, … up to the cores (2 on one core), keeping parts of at least SMALLEST_PART images."""
    counts, parts = [], 1
    while parts <= max(2, cores) and batch_size // parts >= SMALLEST_PART:
        counts.append(parts)
        parts *= 2
    return counts


def epoch_steps(batch_size, quick):
    images, least = (QUICK_IMAGES_PER_EPOCH, QUICK_MIN_STEPS) if quick else (IMAGES_PER_EPOCH, MIN_STEPS)
    return max(least, images // batch_size)


# ---------------------------------------------------------------- one point, in a process of its own


def measure(config_path, parts, batch_sizes, epochs, quick):
    """For each batch size: trains 1 + `epochs` epochs with cnnlab's loop and reports the timed epochs' images/s."""
    from cnnlab.training import tf_loop as loop

    loop.share_cores(parts)  # before TensorFlow's first operation, as `cnnlab train` does
    return [measure_batch(config_path, parts, batch_size, epoch_steps(batch_size, quick), epochs) for batch_size in batch_sizes]


def measure_batch(config_path, parts, batch_size, steps, epochs):
    import keras
    import numpy as np
    import tensorflow as tf

    from cnnlab.training import tf_loop as loop

    from dataclasses import replace

    config, job, data = prepared(config_path, batch_size)
    splits = job.splits
    count = steps * batch_size
    pick = np.arange(count) % len(splits.x_train)  # a small dataset is repeated to fill the epoch
    train = (splits.x_train[pick], splits.y_train[pick])
    val_size = loop.VALIDATION_BATCHES * batch_size  # one validation step an epoch, outside the timing
    val = (splits.x_val[:val_size], splits.y_val[:val_size])

    marks = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks.append(time.perf_counter())

        def on_test_begin(self, logs=None):
            marks.append(time.perf_counter())

    timed = replace(job, splits=replace(splits, x_train=train[0], y_train=train[1], x_val=val[0], y_val=val[1]))
    loop.fit(timed.with_train(batch_size=batch_size, shuffle=True, batch_parts=parts, steps_per_execution=1),
             [EpochTimer()], 1 + epochs, verbose=0)
    rates = [count / (end - begin) for begin, end in zip(marks[2::2], marks[3::2])]  # epoch 0 is the warm-up
    return {"batch_size": batch_size, "parts": parts, "steps_per_epoch": steps, "images_per_s": rates,
            "median": statistics.median(rates), "cores": usable_cores(),
            "threads_per_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "ops_at_once": tf.config.threading.get_inter_op_parallelism_threads(),
            "tensorflow": tf.__version__, "data": data}


def prepared(config_path, batch_size):
    """(config, its TrainingJob from `job.prepare`, what the data is) at this batch size:
    the config's own data where it loads, else random images of its input shape."""
    import numpy as np

    from cnnlab.config.experiment import load_config
    from cnnlab.errors import DataError
    from cnnlab.training.job import prepare

    config = load_config(config_path, overrides=[f"train.batch_size={batch_size}"])
    try:
        return config, prepare(config), config.data.source
    except DataError:
        pass
    rng = np.random.default_rng(0)
    shape = tuple(config.model.input_shape)
    classes = max(2, config.model.layers[-1].kwargs.get("units", 10))
    with tempfile.TemporaryDirectory(prefix="split-rule-") as folder:  # prepare reads the arrays into memory
        path = Path(folder) / "random.npz"
        np.savez(path, x_train=rng.integers(0, 256, (4096, *shape), dtype=np.uint8), y_train=rng.integers(0, classes, 4096),
                 x_val=rng.integers(0, 256, (512, *shape), dtype=np.uint8), y_val=rng.integers(0, classes, 512))
        config = load_config(config_path, overrides=[f"train.batch_size={batch_size}", "data.source=npz", f"data.path={path}"])
        return config, prepare(config), f"random images {shape} ({config_path}'s own data did not load)"


# ---------------------------------------------------------------- the sweep


def plan(batch_sizes, cores, repeats, quick):
    """(repeat, parts, batch sizes) of each process, in the order they run.

    A point a process: within a repeat, whole batches and their splits one after another,
    so a busy spell of the machine hits a pair. With --quick a process measures every batch
    size of its part count (one import of TensorFlow, not three): what a process must not
    mix is thread settings, and those depend on the part count alone.
    """
    if quick:
        counts = sorted({parts for batch_size in batch_sizes for parts in part_counts(cores, batch_size)})
        return [(repeat, parts, [b for b in batch_sizes if parts in part_counts(cores, b)]) for repeat in range(repeats) for parts in counts]
    return [(repeat, parts, [batch_size]) for batch_size in batch_sizes for repeat in range(repeats) for parts in part_counts(cores, batch_size)]


def run_process(args, parts, batch_sizes, repeat):
    """Measures in a fresh process; once more where other processes kept over BUSY of the cores busy
    meanwhile, keeping the quieter try."""
    tries = []
    while len(tries) < BUSY_TRIES and (not tries or tries[-1][0].get("others_busy", 0.0) > BUSY):
        tries.append(measure_in_process(args, parts, batch_sizes))
    points = min(tries, key=lambda t: t[0].get("others_busy", 0.0))
    return [{**point, "repeat": repeat, "tries": len(tries)} for point in points]


def measure_in_process(args, parts, batch_sizes):
    command = [sys.executable, __file__, "--config", args.config, "--epochs", str(args.epochs), *(["--quick"] if args.quick else []),
               "--point", str(parts), *map(str, batch_sizes)]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    before = busy_seconds(), own_cpu_seconds(), time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    after = busy_seconds(), own_cpu_seconds(), time.perf_counter()
    if process.returncode != 0:
        sys.exit(f"batch {batch_sizes}, {parts} parts failed:\n{process.stderr[-3000:]}")
    points = json.loads(process.stdout.strip().splitlines()[-1])
    if before[0] is not None:  # what else ran on these cores meanwhile
        others = (after[0] - before[0]) - (after[1] - before[1])
        points = [{**point, "others_busy": max(0.0, others / ((after[2] - before[2]) * affinity_cores()))} for point in points]
    return points


def busy_seconds():
    """CPU seconds spent on this process's cores so far, by anyone (Linux's /proc/stat); None elsewhere."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{index}" for index in os.sched_getaffinity(0)}
    busy = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal: not idle, iowait, nor guest (counted in user)
    ticks = sum(sum(int(fields[1 + i]) for i in busy) for fields in (line.split() for line in lines) if fields and fields[0] in mine)
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(points, cores):
    """Per batch size: whole batches' images/s, each split's ratio to them and the best part count; and the
    smallest part that paid off. Only splits into at most `cores` parts count: more parts than cores is never chosen."""
    rows, paying_sizes = [], []
    for batch_size in sorted({p["batch_size"] for p in points}):
        mine = [p for p in points if p["batch_size"] == batch_size]
        rate = {(p["repeat"], p["parts"]): p["median"] for p in mine}
        ratios = {parts: statistics.median(rate[repeat, parts] / rate[repeat, 1] for repeat, n in rate if n == parts)
                  for parts in sorted({p["parts"] for p in mine}) if parts > 1}
        paying = {parts: ratio for parts, ratio in ratios.items() if ratio >= PAYS_OFF and parts <= cores}
        paying_sizes += [batch_size // parts for parts in paying]
        best = max(paying, key=paying.get) if paying else 1
        rows.append({"batch_size": batch_size, "whole": statistics.median(p["median"] for p in mine if p["parts"] == 1),
                     "ratios": ratios, "best_parts": best, "best_part_size": batch_size // best if best > 1 else None,
                     "others_busy": max((p["others_busy"] for p in mine if "others_busy" in p), default=None)})
    return rows, min(paying_sizes, default=None)


def table(rows, counts):
    header = ["batch", "whole images/s"] + [f"{parts} parts" for parts in counts[1:]] + ["best", "others busy"]
    body = []
    for row in rows:
        cells = [str(row["batch_size"]), f"{row['whole']:,.0f}"]
        cells += [f"{row['ratios'][parts]:.2f}×" if parts in row["ratios"] else "" for parts in counts[1:]]
        cells.append("whole" if row["best_parts"] == 1 else f"{row['best_parts']} parts of {row['best_part_size']}")
        cells.append("-" if row["others_busy"] is None else f"≤ {row['others_busy']:.0%}")
        body.append(cells)
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in [header] + body)


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fashion_mnist_cnn.yaml")
    parser.add_argument("--repeats", type=int, help="processes a point (default 3; 1 with --quick)")
    parser.add_argument("--epochs", type=int, help="timed epochs a process, after one warm-up epoch (default 2; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="batch sizes 8, 32, 128 and shorter epochs: the 1-16-core sweep in minutes")
    parser.add_argument("--batch-sizes", help="comma-separated, instead of 8,16,32,64,128")
    parser.add_argument("--out", help="write the points and the summary here as JSON")
    parser.add_argument("--show", nargs="+", metavar="JSON", help="print the tables of earlier runs' --out files, and measure nothing")
    parser.add_argument("--point", nargs="+", type=int, metavar="PARTS BATCH", help=argparse.SUPPRESS)  # a child's work
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.epochs = args.epochs or (3 if args.quick else 2)
    if args.point:
        print(json.dumps(measure(args.config, args.point[0], args.point[1:], args.epochs, args.quick)))
        return
    if args.show:
        results = sorted((json.loads(Path(path).read_text()) for path in args.show), key=lambda r: (r["config"], r["cores"]))
        print("\n\n".join(report(result) for result in results))
        return

    cores = usable_cores()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    started = time.perf_counter()
    points = []
    for repeat, parts, sizes in plan(batch_sizes, cores, args.repeats, args.quick):
        for point in run_process(args, parts, sizes, repeat):
            points.append(point)
            print(f"  batch {point['batch_size']:3}, {parts:2} part{'s' * (parts > 1)}, repeat {repeat + 1}: {point['median']:7,.0f} images/s, "
                  f"{point['threads_per_op']} threads per operation; other processes kept "
                  f"{point.get('others_busy', float('nan')):.0%} of the cores busy (try {point['tries']})", file=sys.stderr, flush=True)
    rows, smallest = summary(points, cores)
    result = {"config": args.config, "cores": cores, "affinity": affinity_cores(), "cpu": cpu_name(),
              "python": platform.python_version(), "tensorflow": points[0]["tensorflow"], "data": points[0]["data"],
              "quick": args.quick, "repeats": args.repeats, "epochs": args.epochs, "pays_off_at": PAYS_OFF,
              "smallest_paying_part": smallest, "rows": rows, "points": points, "seconds": time.perf_counter() - started,
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    print(report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def report(result):
    """The table a sweep prints, from its result (as written to --out, or read back with --show)."""
    counts = sorted({p["parts"] for p in result["points"]})
    rows = [{**row, "ratios": {int(parts): ratio for parts, ratio in row["ratios"].items()}} for row in result["rows"]]
    cores, repeats = result["cores"], result["repeats"]
    return "\n".join([
        f"{result['config']}: {cores} core{'s' * (cores > 1)} ({result['cpu']}, TensorFlow {result['tensorflow']}, data: "
        f"{result['data']}); training images/s of whole batches and each split's ratio to them; medians of "
        f"{repeats} process{'es' * (repeats > 1)} of {result['epochs']} timed epochs",
        table(rows, counts),
        f"smallest part that paid off (≥ {result['pays_off_at']:.2f}×, parts ≤ cores): {result['smallest_paying_part'] or 'none'}; "
        f"{len(result['points'])} points in {result['seconds']:.0f} s"])


if __name__ == "__main__":
    main()
