"""Figures a person wants to look at after training: loss and accuracy per epoch, best epoch marked."""

import matplotlib

matplotlib.use("Agg")  # files only: cnnlab runs on servers without a display
import matplotlib.pyplot as plt  # noqa: E402


def plot_history(history, metric, best_epoch, title=""):
    """Train and validation `metric` per epoch (1-based), with the best epoch marked; returns the figure."""
    epochs = range(1, len(history[metric]) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.plot(epochs, history[metric], marker="o", markersize=3, label=f"train {metric}")
    val_key = f"val_{metric}"
    if val_key in history:
        ax.plot(epochs, history[val_key], marker="o", markersize=3, label=f"validation {metric}")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
            ax.plot([best_epoch], [history[val_key][best_epoch - 1]], marker="*", markersize=12,
                    color="crimson", linestyle="none", label=f"best epoch ({best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    if len(epochs) < 20:
        ax.set_xticks(list(epochs))
    ax.set_title(title or metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_comparison(curves, ylabel, title="", missing=()):
    """One line per label on shared axes: `curves` maps a label to its runs' per-epoch values.

    A label with several runs (seeds) shows their mean with a min-max band; where runs
    stopped early at different epochs, each epoch is summarised over the runs that reached it.
    Labels in `missing` (e.g. runs that failed) appear in the legend only, marked as not shown.
    """
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=100)
    longest = 1
    for label, values_per_run in curves.items():
        longest = max(longest, max(len(values) for values in values_per_run))
        epochs, means, lows, highs = _epoch_summary(values_per_run)
        (line,) = ax.plot(epochs, means, marker="o", markersize=3, label=label)
        if len(values_per_run) > 1:
            ax.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    for label in missing:
        ax.plot([], [], linestyle="none", marker="x", color="grey", label=f"{label} (failed, not shown)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if longest < 20:
        ax.set_xticks(list(range(1, longest + 1)))
    ax.set_title(title or ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _epoch_summary(values_per_run):
    """1-based epochs with the mean, min and max over the runs that reached each one."""
    epochs, means, lows, highs = [], [], [], []
    for i in range(max(len(values) for values in values_per_run)):
        here = [values[i] for values in values_per_run if i < len(values)]
        epochs.append(i + 1)
        means.append(sum(here) / len(here))
        lows.append(min(here))
        highs.append(max(here))
    return epochs, means, lows, highs


def plot_confusion_matrix(counts, class_names, title=""):
    """Counts in each cell, coloured by the fraction of the true class (row-normalised), classes named on both axes."""
    import numpy as np

    counts = np.asarray(counts)
    k = len(class_names)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    side = min(max(4.8, 0.5 * k + 2.5), 24)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=100)
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    long_names = any(len(name) > 3 for name in class_names)
    ax.set_xticks(range(k), labels=class_names, rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), labels=class_names)
    if k <= 30:  # beyond that the numbers no longer fit in their cells
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8 if k > 12 else 10,
                        color="white" if fractions[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


def plot_image_grid(images, captions, title="", columns=5, empty_text="no images"):
    """uint8 images (H, W, 1 or 3) in a grid, each with its caption; `empty_text` in place of an empty grid."""
    import math

    if not len(images):
        fig, ax = plt.subplots(figsize=(4.8, 2.4), dpi=100)
        ax.text(0.5, 0.5, empty_text, ha="center", va="center", fontsize=12)
        ax.axis("off")
        ax.set_title(title)
        return fig
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(2.2 * cols, 4.8), 2.6 * rows + 0.6), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig):
    plt.close(fig)
