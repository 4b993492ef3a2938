"""`cnnlab lr-find`: a learning-rate range test (Smith, 2017, https://arxiv.org/abs/1506.01186; fastai's `lr_find`).

The config's model trains on its training split for some batches while the rate grows
exponentially from `start` to `end`; the loss of each batch is smoothed (an exponential
moving average with bias correction, as fastai does) and the test stops once it explodes
(past 4 times its minimum) or turns NaN. The suggestion is the rate of steepest descent of
the smoothed loss, fastai's `steep`: where raising the rate still helps most. The model is
built, trained and thrown away; nothing of it is kept but the curve.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.rundir import files as run_files
from cnnlab.tracking import plots

SMOOTHING = 0.98  # fastai's beta for the moving average of the loss
EXPLODED = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass(frozen=True)
class LrFinding:
    rates: list
    losses: list  # smoothed, one per batch trained
    suggested: float
    stopped_early: bool
    plot: Path
    record: Path


def lr_find(config, output_dir, start=1e-7, end=10.0, steps=100):
    """Runs the range test for `config` and writes lr_find.png and lr_find.json into `output_dir`."""
    check_range(start, end, steps)
    from cnnlab.data.preprocessing import preprocess_images
    from cnnlab.runtime import keras_compat
    from cnnlab.training.job import prepare

    job = prepare(config)
    model, x, y = job.model, job.splits.x_train, job.splits.y_train
    if keras_compat.has_schedule(model.optimizer):
        raise ConfigError("compile.optimizer.learning_rate", "is a schedule; lr-find sets the rate itself, so give a number")
    rng = np.random.default_rng(config.seed)
    batch = min(config.train.batch_size, len(x))
    factor = (end / start) ** (1 / (steps - 1))
    rates, losses, average, best, order = [], [], 0.0, math.inf, np.array([], dtype=np.int64)
    for step in range(steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(x))])
        chosen, order = order[:batch], order[batch:]
        rate = start * factor ** step
        model.optimizer.learning_rate = rate
        loss = model.train_on_batch(preprocess_images(x[chosen], job.prep), y[chosen], return_dict=True)["loss"]
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        rates.append(rate)
        losses.append(float(smoothed))
        best = min(best, smoothed)
        if step > 0 and smoothed > EXPLODED * best:
            break
    stopped_early = len(rates) < steps
    suggested = steepest(rates, losses)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    plot_path, record_path = folder / "lr_find.png", folder / "lr_find.json"
    run_files.write_json(record_path, {"config": config.name, "start": start, "end": end, "steps": steps,
                                       "suggested_learning_rate": suggested, "rule": "steepest descent of the smoothed loss",
                                       "stopped_early": stopped_early, "learning_rates": rates, "smoothed_losses": losses})
    run_files.save_figure(plots.plot_lr_find(rates, losses, suggested, title=f"{config.name}: learning-rate range test"),
                          plot_path)
    return LrFinding(rates, losses, suggested, stopped_early, plot_path, record_path)


def check_range(start, end, steps):
    """The options, checked before the config is, so their error names them and not the config file."""
    if not 0 < start < end:
        raise ConfigError("--start/--end", f"expected 0 < start < end, received start={start:g}, end={end:g}")
    if steps < 5:
        raise ConfigError("--steps", f"expected at least 5 batches to draw a curve, received {steps}")


def steepest(rates, losses):
    """The rate where the smoothed loss falls fastest per decade of rate, fastai's `steep` suggestion.

    The last points, where the loss has begun to explode, are not candidates; with too few
    points for a slope, the rate of the lowest loss divided by 10 (fastai's `minimum`).
    """
    if len(rates) < 3:
        return float(rates[int(np.argmin(losses))] / 10) if rates else float("nan")
    slopes = np.gradient(np.asarray(losses), np.log10(rates))
    usable = slopes[: max(2, int(np.argmin(losses)) + 1)]
    return float(rates[int(np.argmin(usable))])


def format_finding(finding, config_path):
    lines = [f"Tried {len(finding.rates)} learning rates from {finding.rates[0]:.1e} to {finding.rates[-1]:.1e}"
             + (" (stopped where the loss exploded)" if finding.stopped_early else ""),
             f"Suggested learning rate: {finding.suggested:.2e} (steepest descent of the smoothed loss)",
             f"Train with it: cnnlab train {config_path} --set compile.optimizer.learning_rate={finding.suggested:.2e}",
             f"Wrote {finding.plot} and {finding.record}"]
    return "\n".join(lines)
