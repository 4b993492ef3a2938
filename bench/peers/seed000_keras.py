"""Seed 000's Fashion-MNIST CNN exactly as the notebook writes it: the plain-Keras baseline for bench/train_speed.py.

Only the data loading differs, because `keras.datasets.fashion_mnist.load_data()`
needs the internet: the same four IDX files are read with NumPy instead. Everything
after that is the notebook's code: float64 arrays divided by 255, a 48k/12k
`train_test_split`, `model.fit` with batch 32 (Keras' default), ModelCheckpoint and
EarlyStopping. Then, not in the notebook, what `cnnlab train` does after its fit, so that
a whole process of each side does the same work: the test images scored and the loss
and accuracy curves saved as PNGs. Prints one JSON line with the measured figures.

    python bench/peers/seed000_keras.py --epochs 2 [--data /usr/share/datasets/fashion-mnist] [--seed 42] [--out DIR]
"""

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def save_plots(history, folder):
    """Loss and accuracy per epoch, train and validation, as PNG files: the plots a `cnnlab train` run folder holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for metric in ("loss", "accuracy"):
        fig, ax = plt.subplots()
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / f"{metric}.png")
        plt.close(fig)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--seed", type=int, default=42, help="Keras' seed (the seed's code uses 42; the split keeps random_state=42)")
    parser.add_argument("--out", help="folder for the checkpoint and the plots (default: a new temporary folder)")
    args = parser.parse_args()

    from tensorflow import keras
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(args.seed)
    folder = Path(args.data)
    train_input = read_idx(folder / "train-images-idx3-ubyte.gz")
    train_target = read_idx(folder / "train-labels-idx1-ubyte.gz")

    # --- from here on, seed 000 as written ---
    train_scaled = train_input.reshape(-1, 28, 28, 1) / 255.0
    train_scaled, val_scaled, train_target, val_target = train_test_split(
        train_scaled, train_target, test_size=0.2, random_state=42)

    model = keras.Sequential()
    model.add(keras.layers.Conv2D(32, kernel_size=3, activation='relu', padding='same', input_shape=(28, 28, 1)))
    model.add(keras.layers.MaxPooling2D(2))
    model.add(keras.layers.Conv2D(64, kernel_size=(3, 3), activation='relu', padding='same'))
    model.add(keras.layers.MaxPooling2D(2))
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(100, activation='relu'))
    model.add(keras.layers.Dropout(0.4))
    model.add(keras.layers.Dense(10, activation='softmax'))

    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    checkpoint_path = os.path.join(args.out or tempfile.mkdtemp(), 'best-cnn-model.keras')  # the seed's .h5 is legacy in Keras 3
    checkpoint_cb = keras.callbacks.ModelCheckpoint(checkpoint_path, save_best_only=True)
    early_stopping_cb = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    started = time.perf_counter()
    history = model.fit(train_scaled, train_target, epochs=args.epochs, verbose=0,
                        validation_data=(val_scaled, val_target),
                        callbacks=[checkpoint_cb, early_stopping_cb])
    fit_seconds = time.perf_counter() - started
    # --- end of the seed's code ---

    epochs_run = len(history.history["loss"])
    # Not timed, not in the seed's code: the same 10,000 test images cnnlab scores its best model on.
    test_input = read_idx(folder / "t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28, 1) / 255.0
    test_target = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    _, test_accuracy = model.evaluate(test_input, test_target, verbose=0)
    save_plots(history.history, Path(os.path.dirname(checkpoint_path)))
    print(json.dumps({
        "images_per_s": len(train_scaled) * epochs_run / fit_seconds,
        "fit_seconds": fit_seconds,
        "epochs_run": epochs_run,
        "final_val_accuracy": history.history["val_accuracy"][-1],
        "best_val_accuracy": max(history.history["val_accuracy"]),
        "test_accuracy": test_accuracy,
    }))


if __name__ == "__main__":
    sys.exit(main())
