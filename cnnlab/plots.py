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


def close(fig):
    plt.close(fig)
