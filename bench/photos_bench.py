"""The small-photo recipe against the seed's 100×100 net, on photo-like images made from Fashion-MNIST.

We do not have the two-class photo set the recipe is written for, so the bench makes
one that behaves like photos: two Fashion-MNIST classes that differ only in their
sleeves (T-shirt/top and Pullover), each garment scaled to 60–85 px, rotated by up to
±10°, mirrored or not, tinted in a random colour that stands out from its background,
placed within 12 px of the centre (as people frame photos) on a 100×100 background of
random colour, gradient and blotches, under random lighting, with sensor noise, saved
as JPEG. Its
training folder holds `--per-class` photos of each class drawn from Fashion-MNIST's
training images; a second folder of `--held-out-per-class` photos each, drawn from its
test images (garments neither net has seen), measures held-out accuracy with
`cnnlab evaluate RUN --data FOLDER`.

Speed: one run each of `cnnlab train CONFIG --set data.path=FOLDER`, the recipe for
`--speed-epochs-recipe` epochs and the seed's net for `--speed-epochs-seed`, early
stopping off; images/s as `cnnlab train` reports it (training images × epochs ÷ epoch
time, validation and the first epoch's tracing included) and in steady state (the
epochs after the first, from history.csv).
Accuracy: each config trained as shipped (its epochs and early stopping) for every
seed of `--seeds`, then scored on the held-out folder.

    python bench/photos_bench.py [--per-class 200] [--seeds 42 43 44] [--data-seed 1] [--only recipe|seed|both] [--skip-speed] [--skip-accuracy]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = {"tshirt": 0, "pullover": 2}  # Fashion-MNIST's T-shirt/top and Pullover: alike but for the sleeves
RECIPE = "configs/photos.yaml"
SEED_NET = "configs/rgb100_binary.yaml"
SIZE = 100


# ---------------------------------------------------------------- photo-like images


def garments(split):
    """{class name: uint8 (N, 28, 28)} of Fashion-MNIST's `split` ("train" or "test") for CLASSES."""
    from cnnlab.data.sources import IDX_FILES, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, find_idx_file, read_idx

    prefix = "x_train" if split == "train" else "x_test"
    images = read_idx(find_idx_file(FASHION, IDX_FILES[prefix]), IDX_IMAGES_MAGIC)
    labels = read_idx(find_idx_file(FASHION, IDX_FILES["y" + prefix[1:]]), IDX_LABELS_MAGIC)
    return {name: images[labels == label] for name, label in CLASSES.items()}


def background(rng):
    """A 100×100 RGB float background: a colour, a linear gradient across it, and a few soft blotches."""
    base = rng.uniform(0, 255, 3)
    direction = rng.normal(size=2)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE - 0.5
    gradient = (ys * direction[0] + xs * direction[1])[..., None] * rng.uniform(-120, 120, 3)
    blotches = np.zeros((SIZE, SIZE, 3))
    for _ in range(rng.integers(0, 4)):
        cy, cx, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(8, 35)
        blob = np.exp(-((np.mgrid[0:SIZE, 0:SIZE][0] - cy) ** 2 + (np.mgrid[0:SIZE, 0:SIZE][1] - cx) ** 2) / (2 * r * r))
        blotches += blob[..., None] * rng.uniform(-90, 90, 3)
    return base + gradient + blotches


def photo(garment, rng):
    """One photo-like 100×100 RGB uint8 image of a 28×28 Fashion-MNIST garment."""
    from PIL import Image

    size = int(rng.integers(60, 86))
    item = Image.fromarray(garment).resize((size, size), Image.BICUBIC).rotate(rng.uniform(-10, 10), Image.BICUBIC)
    item = np.asarray(item, dtype=np.float64) / 255
    if rng.random() < 0.5:
        item = item[:, ::-1]
    mask = np.clip(item * 4, 0, 1)[..., None]  # the garment's silhouette, soft at the edge
    canvas = background(rng)
    tint = rng.uniform(30, 255, 3)
    while np.abs(tint - canvas.mean(axis=(0, 1))).max() < 80:  # a garment the colour of its background is not a photo anyone keeps
        tint = rng.uniform(30, 255, 3)
    cloth = tint * (0.35 + 0.65 * item[..., None])  # the garment's own shading shows through its colour
    top, left = np.clip((SIZE - size) // 2 + rng.integers(-12, 13, 2), 0, SIZE - size)
    region = canvas[top:top + size, left:left + size]
    canvas[top:top + size, left:left + size] = region * (1 - mask) + cloth * mask
    canvas = canvas * rng.uniform(0.6, 1.25) + rng.normal(0, rng.uniform(2, 10), canvas.shape)  # light, sensor noise
    return np.clip(canvas, 0, 255).astype(np.uint8)


def make_photo_folder(folder, per_class, split, seed):
    """`per_class` JPEG photos of each class under folder/<class>/, from Fashion-MNIST's `split`; returns `folder`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, images in garments(split).items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(rng.choice(len(images), per_class, replace=False)):
            Image.fromarray(photo(images[index], rng)).save(folder / name / f"{i:04d}.jpg", quality=90)
    return folder


# ---------------------------------------------------------------- training and scoring


def cnnlab(*args):
    process = subprocess.run([sys.executable, "-m", "cnnlab.cli", *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    if process.returncode != 0:
        sys.exit(f"cnnlab {' '.join(map(str, args))} failed:\n{process.stdout[-1500:]}\n{process.stderr[-2500:]}")
    return process.stdout


def train(config, folder, runs_dir, seed, *extra):
    """`cnnlab train CONFIG --set data.path=FOLDER --set seed=SEED` into a fresh runs folder; returns the run folder."""
    runs_dir = Path(tempfile.mkdtemp(dir=runs_dir))
    cnnlab("train", config, "-q", "--runs-dir", runs_dir, f"--set=data.path={folder}", f"--set=seed={seed}", *extra)
    (run_dir,) = runs_dir.iterdir()
    return run_dir


def speed(config, folder, runs_dir, epochs, extra):
    """(images/s as cnnlab reports it, images/s of the epochs after the first) of one run of `epochs` epochs."""
    run_dir = train(config, folder, runs_dir, 42, "--epochs", epochs, "--set=train.callbacks.early_stopping=null", *extra)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "history.csv", newline="") as f:
        times = [float(row["time_s"]) for row in csv.DictReader(f)]
    return metrics["images_per_s"], metrics["num_train"] * (len(times) - 1) / sum(times[1:])


def accuracy(config, folder, held_out, runs_dir, seed, extra):
    """Trains `config` as shipped with `seed` and scores its best model on the held-out folder."""
    run_dir = train(config, folder, runs_dir, seed, *extra)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scored = json.loads(cnnlab("evaluate", run_dir, "--data", held_out, "--json"))
    return {"held_out": scored["accuracy"], "own_test": metrics["test"]["accuracy"], "epochs": metrics["epochs_run"],
            "best_epoch": metrics["best_epoch"], "fit_s": metrics["fit_time_s"], "images_per_s": metrics["images_per_s"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200, help="training photos per class (default 200: 400 photos)")
    parser.add_argument("--held-out-per-class", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--only", choices=("recipe", "seed", "both"), default="both")
    parser.add_argument("--speed-epochs-recipe", type=int, default=30)
    parser.add_argument("--speed-epochs-seed", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--data-seed", type=int, default=1, help="draws the training photos; the held-out ones use the next seed")
    parser.add_argument("--keep", type=Path, help="make the photo folders here, or use those already there (default: a temporary folder)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for the recipe (to try a setting)")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()  # removed when the bench exits
    where = args.keep or Path(scratch.name)
    folder, held_out = where / "photos", where / "held_out"
    if not folder.exists():
        make_photo_folder(folder, args.per_class, "train", seed=args.data_seed)
        make_photo_folder(held_out, args.held_out_per_class, "test", seed=args.data_seed + 1)
    runs_dir = Path(scratch.name) / "runs"
    runs_dir.mkdir()
    configs = {"recipe": (RECIPE, [f"--set={s}" for s in args.sets]), "seed": (SEED_NET, [])}
    chosen = [key for key in configs if args.only in (key, "both")]
    print(f"photos: {sum(1 for _ in folder.rglob('*.jpg'))} in {folder}; held out: {sum(1 for _ in held_out.rglob('*.jpg'))} in {held_out}", flush=True)

    if not args.skip_speed:
        rates = {}
        for key in chosen:
            config, extra = configs[key]
            epochs = args.speed_epochs_recipe if key == "recipe" else args.speed_epochs_seed
            rates[key] = speed(config, folder, runs_dir, epochs, extra)
            print(f"speed {config}: {rates[key][0]:.1f} images/s as cnnlab reports it over {epochs} epochs, "
                  f"{rates[key][1]:.1f} images/s after the first epoch", flush=True)
        if len(rates) == 2:
            print(f"speed ratio recipe / seed's net: {rates['recipe'][0] / rates['seed'][0]:.1f}x as reported, "
                  f"{rates['recipe'][1] / rates['seed'][1]:.1f}x after the first epoch", flush=True)

    if not args.skip_accuracy:
        for key in chosen:
            config, extra = configs[key]
            held = []
            for seed in args.seeds:
                result = accuracy(config, folder, held_out, runs_dir, seed, extra)
                held.append(result["held_out"])
                print(f"accuracy {config} seed {seed}: held out {result['held_out']:.4f}, own test split {result['own_test']:.4f}, "
                      f"epochs {result['epochs']} (best {result['best_epoch']}), {result['fit_s']:.0f} s, "
                      f"{result['images_per_s']:.1f} images/s", flush=True)
            print(f"accuracy {config}: median held out {statistics.median(held):.4f} over seeds {' '.join(map(str, args.seeds))}", flush=True)


if __name__ == "__main__":
    main()
