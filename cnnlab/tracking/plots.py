"""Figures a person wants to look at after training: loss and accuracy per epoch, best epoch marked."""

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # files only: cnnlab runs on servers without a display; a notebook keeps its inline backend
    matplotlib.use("Agg")
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


def plot_image_grid(images, captions, title="", columns=5, empty_text="no images", overlays=None):
    """uint8 images (H, W, 1 or 3) in a grid, each with its caption; `empty_text` in place of an empty grid.

    `overlays`, one [0, 1] map per image (Grad-CAM's), are laid over the images half transparent.
    """
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
    for i, (ax, image, caption) in enumerate(zip(axes.flat, images, captions)):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        if overlays is not None:
            ax.imshow(overlays[i], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_grad_cam(image, heatmap, title=""):
    """uint8 pixels (H, W, 1 or 3) beside themselves under a Grad-CAM heatmap in [0, 1], with the map's scale."""
    fig, (image_ax, cam_ax) = plt.subplots(1, 2, figsize=(8.4, 4.4), dpi=100, layout="constrained")
    for ax in (image_ax, cam_ax):
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.axis("off")
    shown = cam_ax.imshow(heatmap, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    fig.colorbar(shown, ax=cam_ax, shrink=0.8, label="Grad-CAM (1 = where the class looks most)")
    image_ax.set_title("image", fontsize=9)
    cam_ax.set_title("where the class looks", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_lr_find(rates, losses, suggested, title=""):
    """Smoothed loss against a log-scaled learning rate, the suggested rate marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.plot(rates, losses, label="smoothed training loss")
    ax.set_xscale("log")
    if suggested == suggested:  # not NaN
        ax.axvline(suggested, color="tab:red", linestyle="--", label=f"suggested {suggested:.1e} (steepest descent)")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- inside a network: filters and feature maps


def plot_filter_grid(tiles, title="", rgb=False):
    """Conv kernels as one grid of tiles with one shared, symmetric colour scale, so signs compare across tiles.

    `tiles` is (filters, kh, kw), or (filters, kh, kw, 3) with `rgb` for a first layer on colour
    images: there each colour channel is scaled alike, so mid-grey is zero in every channel.
    Tile i is filter i, counted along the rows.
    """
    import numpy as np

    tiles = np.asarray(tiles, dtype=np.float32)
    limit = float(np.abs(tiles).max()) or 1.0  # all-zero kernels still get a valid scale
    cols = grid_columns(len(tiles))
    mosaic = tile_mosaic(0.5 + tiles / (2 * limit) if rgb else tiles, cols)
    width = min(max(5.5, 0.55 * cols + 2.2), 16)
    height = min(max(3.0, (width - 2.2) * mosaic.shape[0] / mosaic.shape[1] + 1.5), 16)
    fig, ax = plt.subplots(figsize=(width, height), dpi=100, layout="constrained")
    cmap = _grey_with_gaps()
    if rgb:  # the colour bar shows the scale each of R, G and B is drawn with
        import matplotlib.cm

        ax.imshow(np.clip(mosaic, 0, 1), interpolation="nearest")
        shown = matplotlib.cm.ScalarMappable(norm=plt.Normalize(-limit, limit), cmap=cmap)
    else:
        shown = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(shown, ax=ax, shrink=0.9, label="weight (each of R, G, B)" if rgb else "weight")
    _label_tiles(ax, tiles.shape[1:3], cols, len(tiles), "filter")
    fig.suptitle(title, fontsize=10)
    return fig


def plot_feature_maps(image, maps, title="", image_title="input", total=None):
    """The model input beside a grid of a layer's output channels, all on one colour scale.

    `image` is the preprocessed input (H, W, 1 or 3); `maps` is (h, w, channels) for the
    channels shown; `total` is how many channels the layer has. The scale is 0..max for
    non-negative maps (after ReLU, pooling) and symmetric around zero otherwise.
    """
    import numpy as np

    maps = np.moveaxis(np.asarray(maps, dtype=np.float32), -1, 0)
    cols = grid_columns(len(maps))
    mosaic = tile_mosaic(maps, cols)
    low, high = float(np.nanmin(mosaic)), float(np.nanmax(mosaic))
    if low < 0:
        low, high = -max(-low, high), max(-low, high)
    else:
        low = 0.0
    high = high if high > low else low + 1.0  # a dead layer (all zeros) still gets a valid scale

    rows = mosaic.shape[0] / mosaic.shape[1]  # height of the grid per unit of width
    grid_width = min(max(4.5, 1.1 * cols), 12)
    fig_height = min(max(3.2, grid_width * rows + 1.3), 16)
    fig, (image_ax, maps_ax) = plt.subplots(1, 2, figsize=(grid_width + 4.2, fig_height), dpi=100, layout="constrained",
                                            gridspec_kw={"width_ratios": [2.6, grid_width]})
    _show_input(image_ax, image)
    image_ax.set_title(image_title, fontsize=9)
    shown = maps_ax.imshow(mosaic, cmap=_grey_with_gaps(), vmin=low, vmax=high, interpolation="nearest")
    fig.colorbar(shown, ax=maps_ax, shrink=min(1.0, 0.4 + rows), label="activation")
    _label_tiles(maps_ax, maps.shape[1:3], cols, len(maps), "channel")
    count = len(maps) if total is None or total == len(maps) else f"first {len(maps)} of {total}"
    maps_ax.set_title(f"{count} channels", fontsize=9)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_nothing(text, title=""):
    """A small figure that says why there is nothing to draw."""
    fig, ax = plt.subplots(figsize=(4.8, 2.4), dpi=100)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
    ax.axis("off")
    ax.set_title(title)
    return fig


def grid_columns(count):
    """About twice as wide as tall, full rows where a divisor allows: 4 → 4, 10 → 5, 32 → 8, 64 → 16, 512 → 32."""
    import math

    least = math.ceil(math.sqrt(2 * count))
    full = [cols for cols in range(least, math.floor(2 * math.sqrt(2 * count)) + 1) if count % cols == 0]
    return max(1, min(count, full[0] if full else least))


def tile_mosaic(tiles, cols, gap=1):
    """(n, h, w[, 3]) tiles → one (rows·(h+gap)-gap, cols·(w+gap)-gap[, 3]) array, NaN between and after the tiles."""
    import math

    import numpy as np

    tiles = np.asarray(tiles, dtype=np.float32)
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / cols)
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles.shape[3:]), np.nan, dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
    if mosaic.ndim == 3:  # RGB: NaN gaps become white, as the colour-map's gaps do
        mosaic = np.where(np.isnan(mosaic), 1.0, mosaic)
    return mosaic


def _grey_with_gaps():
    return plt.get_cmap("gray").with_extremes(bad="white")  # white for the NaN gaps between tiles


def _label_tiles(ax, tile_shape, cols, count, what):
    """Ticks that name the tiles: the y axis gives the first index of each row, the x axis what to add per column."""
    import math

    h, w = tile_shape
    rows = math.ceil(count / cols)
    step_x = max(1, math.ceil(cols / 16))  # at most about 16 labels per axis
    step_y = max(1, math.ceil(rows / 16))
    x_centres = [c * (w + 1) + (w - 1) / 2 for c in range(0, cols, step_x)]
    ax.tick_params(length=0)
    if rows == 1:  # one row: the column is the index
        ax.set_xticks(x_centres, labels=[str(c) for c in range(0, cols, step_x)], fontsize=7)
        ax.set_yticks([])
        ax.set_xlabel(what, fontsize=8)
    else:
        ax.set_xticks(x_centres, labels=[f"+{c}" for c in range(0, cols, step_x)], fontsize=7)
        ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(0, rows, step_y)], labels=[str(r * cols) for r in range(0, rows, step_y)], fontsize=7)
        ax.set_ylabel(f"{what}: row start", fontsize=8)
        ax.set_xlabel("+ column", fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)


def _show_input(ax, image):
    """A preprocessed input as a picture: grey for one channel, colour for three, stretched to its own range."""
    import numpy as np

    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=min(low, 0.0), vmax=high if high > min(low, 0.0) else 1.0, interpolation="nearest")
    else:
        scale = (high - min(low, 0.0)) or 1.0
        ax.imshow(np.clip((image - min(low, 0.0)) / scale, 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
