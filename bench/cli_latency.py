"""Wall time of the commands a person types most, against importing TensorFlow: median of N runs each.

`cnnlab --help` and `cnnlab runs` must not import TensorFlow at all; `check` and
`predict` must cost little more than the import itself. Needs a completed run for
`predict` (it trains a 1-epoch digits run into a temporary folder first). Also
reports batch prediction speed after start-up: (1,000 PNGs − 1 PNG) over the time difference.

    python bench/cli_latency.py [--repeats 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CNNLAB_OFFLINE": "1"}


def timed(args, cwd):
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=cwd)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cnnlab = [sys.executable, "-m", "cnnlab.cli"]
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        timed([*cnnlab, "train", str(ROOT / "configs/digits_cnn.yaml"), "--epochs", "1", "-q", "--runs-dir", str(work / "runs")], work)
        image = work / "digit.png"
        from PIL import Image
        from sklearn.datasets import load_digits

        digits = load_digits().images
        Image.fromarray((digits[0] * 255 / 16).astype("uint8")).save(image)
        folder = work / "thousand"
        folder.mkdir()
        for i in range(1000):
            Image.fromarray((digits[i] * 255 / 16).astype("uint8")).save(folder / f"{i:04d}.png")
        commands = {
            "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
            "cnnlab --help": [*cnnlab, "--help"],
            "cnnlab runs": [*cnnlab, "runs"],
            "cnnlab check configs/digits_cnn.yaml": [*cnnlab, "check", str(ROOT / "configs/digits_cnn.yaml")],
            "cnnlab predict digit.png": [*cnnlab, "predict", str(image)],
            "cnnlab predict thousand/ (1,000 PNGs)": [*cnnlab, "predict", str(folder), "--json"],
        }
        results = {}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every command alike
            for name, command in commands.items():
                results.setdefault(name, []).append(timed(command, work))

    base = statistics.median(results["python -c 'import tensorflow'"])
    print(f"{'command':40}{'median s':>10}{'min s':>8}{'- import tf':>13}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:40}{median:10.2f}{min(times):8.2f}{median - base:+13.2f}")
    batch_seconds = statistics.median(results["cnnlab predict thousand/ (1,000 PNGs)"]) - statistics.median(results["cnnlab predict digit.png"])
    print(f"\nbatch predict after start-up: {999 / batch_seconds:,.0f} images/s (1,000 PNGs minus 1 PNG, medians)")
    print(f"{args.repeats} runs each, interleaved; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
