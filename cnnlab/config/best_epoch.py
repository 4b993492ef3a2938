"""The checkpoint's best epoch, judged without Keras: training, its plots and `cnnlab runs --plot` share one rule.

Here rather than in callbacks.py so that `cnnlab runs --plot` can mark the epoch best.keras
holds without importing Keras (and starting a backend) just to compare a few numbers.
"""

import math

from cnnlab.config.metric_names import maximized


def monitor_of(config):
    """The checkpoint's monitor and mode: what decided which epoch best.keras holds."""
    checkpoint = config.train.callbacks["checkpoint"]
    return checkpoint.get("monitor", "val_loss"), checkpoint.get("mode", "auto")


def history_of(rows):
    """Epoch rows → {column: [values]} as Keras' History has it (without the epoch and time columns)."""
    keys = [key for key in (rows[0] if rows else {}) if key not in ("epoch", "time_s", "phase")]
    return {key: [row.get(key, math.nan) for row in rows] for key in keys}


def best_epoch_of(history, monitor, mode="auto"):
    """1-based epoch with the best `monitor` value, as Keras' 'auto' mode judges it; None if never logged."""
    values = history.get(monitor)
    if not values:
        return None
    maximize = mode == "max" or (mode == "auto" and maximized(monitor))
    finite = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not finite:
        return None
    # the first epoch reaching the best value, as Keras keeps the first best
    _, index = max(finite, key=lambda pair: (pair[0], -pair[1])) if maximize else min(finite)
    return index + 1


def saves_every_epoch(config):
    """A checkpoint with save_best_only false writes best.keras after every epoch: it holds the last epoch's model."""
    return not config.train.callbacks["checkpoint"].get("save_best_only", True)


def kept_epoch(history, config):
    """The 1-based epoch whose model best.keras holds: the best by the checkpoint's monitor, or, where the checkpoint
    saves every epoch (a fixed schedule run to its end), the last one; None where none was logged. metrics.json's
    best figures, the plots' marker and the final fit's epoch count all follow it, so that they describe that model."""
    if saves_every_epoch(config):
        return len(history.get("loss") or []) or None
    return best_epoch_of(history, *monitor_of(config))
