"""Photo recipes on real photos: train on a fixed 250-photo subset, score on a separate folder of real photos.

The development set of issue 24: the cats-vs-dogs JPEGs of the public repository
chanakya2734/Image-classification-using-CNN (its dataset/training_set and dataset/test_set,
1,000 photos per class each). Bring it with the project's `fetch` tool, then extract the two
folders, e.g.

    git --git-dir=/work/.mirror/chanakya2734+Image-classification-using-CNN/repo archive HEAD \
        dataset/training_set dataset/test_set | tar -x -C /work/photos

Training uses only the 250 photos listed in bench/real_photos_subset.txt (125 per class,
drawn once with `--make-subset`, seeded, and committed, so every recipe sees the same
photos); each run is scored with `cnnlab evaluate RUN --data TEST_SET` on all 2,000 test
photos. Per config: one run per seed, then the median accuracy with the Wilson 95% interval
of the median run, and the median training time (metrics.json's fit_time_s: the whole fit).
No photo is copied into the repository; the runs go to a temporary folder (--keep to keep them).

    python bench/real_photos.py --photos /work/photos/dataset [--configs configs/photos.yaml ...] [--seeds 42 43 44]
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUBSET = ROOT / "bench" / "real_photos_subset.txt"
PER_CLASS = 125
CLASSES = ("cats", "dogs")
ENV_EXTRA = {"TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}


def make_subset(photos, seed=0):
    """125 file names per class from training_set, drawn with `seed`, as `class/file` lines, sorted."""
    lines = []
    for name in CLASSES:
        files = sorted(path.name for path in (photos / "training_set" / name).iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
        lines += [f"{name}/{file}" for file in sorted(random.Random(seed).sample(files, PER_CLASS))]
    SUBSET.write_text("\n".join(lines) + "\n")
    return lines


def link_subset(photos, folder):
    """The subset as a folder of class sub-folders of links to the photos, the layout cnnlab's image_folder reads."""
    for line in SUBSET.read_text().split():
        target = folder / line
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photos / "training_set" / line)
    return folder


def cnnlab(*args):
    import os

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **ENV_EXTRA})
    if done.returncode != 0:
        raise SystemExit(f"cnnlab {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


def run_one(config, seed, train_folder, test_folder, runs_dir, folds=None):
    """Trains `config` on the subset with `seed` (with `cnnlab cv --folds K` when `folds` is given, scored as the
    ensemble of its fold models), scores it on the test folder; the figures of one row."""
    common = ("--set", f"data.path={train_folder}", "--seed", seed, "--runs-dir", runs_dir)
    if folds:
        out, wall = cnnlab("cv", config, "--folds", folds, *common)
        run_dir = Path(next(line for line in out.splitlines() if line.startswith("Cross-validation: ")).split(": ", 1)[1])
        members = [json.loads(path.read_text()) for path in sorted(run_dir.glob("fold-*/metrics.json"))]
    else:
        out, wall = cnnlab("train", config, *common, "-q")
        run_dir = Path(next(line for line in out.splitlines() if line.startswith("Run: ")).split(": ", 1)[1])
        members = [json.loads((run_dir / "metrics.json").read_text())]
    report, _ = cnnlab("evaluate", run_dir, "--data", test_folder, "--json")
    report = json.loads(report)
    row = {"config": str(config), "seed": seed, "run_dir": str(run_dir), "accuracy": report["accuracy"],
           "correct": report["num_correct"], "n": report["num_images"],
           "epochs": "/".join(str(m["epochs_run"]) for m in members),
           "best_epoch": "/".join(str(m["best_epoch"]) for m in members),
           # the whole training: every fold's fit (and final fit) for cv, summed, as they run one after the other
           "fit_time_s": sum(m["fit_time_s"] + (m.get("final_fit") or {}).get("fit_time_s", 0) for m in members),
           "command_s": wall}
    if folds:  # each fold model alone on the same test photos, to show what the ensemble adds
        row["members"] = []
        for fold_dir in sorted(run_dir.glob("fold-*/")):
            single, _ = cnnlab("evaluate", fold_dir, "--data", test_folder, "--json")
            row["members"].append(json.loads(single)["accuracy"])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="the dataset folder holding training_set/ and test_set/")
    parser.add_argument("--configs", nargs="+", default=["configs/rgb100_binary.yaml", "configs/photos.yaml"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--cv", type=int, metavar="K", help="train with `cnnlab cv --folds K` and score the fold ensemble")
    parser.add_argument("--make-subset", action="store_true", help="draw bench/real_photos_subset.txt again (seed 0)")
    parser.add_argument("--out", type=Path, help="write every row as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from cnnlab.config.intervals import format_accuracy

    if args.make_subset or not SUBSET.exists():
        make_subset(args.photos)
    work = Path(tempfile.mkdtemp(prefix="real-photos-"))
    train_folder = link_subset(args.photos, work / "train")
    rows = []
    for config in args.configs:
        for seed in args.seeds:
            row = run_one(ROOT / config, seed, train_folder, args.photos / "test_set", work / "runs", args.cv)
            rows.append(row)
            members = f", fold models alone {' / '.join(f'{a:.3f}' for a in row['members'])}" if "members" in row else ""
            print(f"{config} seed {seed}: {format_accuracy(row['accuracy'], row['n'], row['correct'])}, "
                  f"{row['epochs']} epochs (best {row['best_epoch']}), fit {row['fit_time_s']:.0f} s{members}", flush=True)
    print()
    for config in args.configs:
        mine = sorted((row for row in rows if row["config"] == str(ROOT / config)), key=lambda row: row["accuracy"])
        middle = mine[len(mine) // 2]
        seeds = ", ".join(str(row["seed"]) for row in mine)
        each = " / ".join(format(row["accuracy"], ".3f") for row in mine)
        fit = statistics.median(row["fit_time_s"] for row in mine)
        print(f"{config}: median {format_accuracy(middle['accuracy'], middle['n'], middle['correct'])} of seeds {seeds} "
              f"({each}); median fit {fit:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"\ncommand: python bench/real_photos.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
