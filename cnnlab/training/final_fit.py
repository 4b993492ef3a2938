"""train.final_fit: once validation has chosen the epoch count, retrain on training + validation images for that many.

On small data the validation split is images the model never learns from. Once it has
done its job, choosing how many epochs to train (the best epoch of the monitored metric),
the final model learns from them too. best.keras stays beside final.keras: the test split,
held out from both, scores each, so a run shows what the extra images bought.

The final fit starts from the weights the first fit started from (the seeded initialisation,
or the initial weights a comparison gave) with a fresh optimizer, and trains exactly
best_epoch epochs: with no validation there is nothing for early stopping, the checkpoint
or reduce_lr to watch (config/sections.py refuses reduce_lr, whose learning rates it could
not replay). It runs Keras' `fit` on every backend, on the seeded epoch orders of keras_fit
(cnnlab's TensorFlow loop is built around a validation pass each epoch; `fit` is that
loop's reference, tests/test_loop.py). It keeps no backup: interrupted, it reruns from its
start on resume, after the first fit's epochs, which the backup kept, have been skipped.
"""

import time

import numpy as np

from cnnlab.config.best_epoch import history_of, kept_epoch
from cnnlab.data.array_batches import ArrayBatches, EpochOrder
from cnnlab.rundir import files as run_files
from cnnlab.training import keras_fit
from cnnlab.training.job import build_compiled


def wanted(config, rows):
    """The epochs the final fit trains (the best epoch of `rows`), or None: not configured, or no usable first fit."""
    if config.train.final_fit is None:
        return None
    history = history_of(rows)
    losses = history.get("loss", [])
    if not losses or not all(value is not None and np.isfinite(value) for value in losses):
        return None  # a NaN run fails in finish_run; there is nothing to retrain
    return kept_epoch(history, config)


def fit_final(job, run_dir, initial_weights, epochs, verbose=1):
    """Trains a fresh copy of the job's model from `initial_weights` on training + validation for `epochs` epochs
    into final.keras; returns the record metrics.json keeps under `final_fit` (its test score is added there)."""
    config, splits = job.config, job.splits
    model = build_compiled(config)
    model.set_weights(initial_weights)
    images = np.concatenate([splits.x_train, splits.x_val])
    labels = np.concatenate([splits.y_train, splits.y_val])
    batches = ArrayBatches(images, labels, job.prep, config.train.batch_size,
                           seed=config.seed if config.train.shuffle else None,
                           mix=keras_fit.batch_mixer(config, model.output_shape[-1]))
    if verbose:
        print(f"Final fit: {len(splits.x_train)} training + {len(splits.x_val)} validation images for {epochs} epochs "
              f"(the best epoch on validation), from the same initial weights", flush=True)
    started = time.perf_counter()
    with keras_fit.interrupts_between_batches() as interrupt:
        history = model.fit(batches, epochs=epochs, callbacks=[EpochOrder(batches), interrupt], verbose=verbose,
                            class_weight=job.class_weight, shuffle=False)  # the order is the PyDataset's own, seeded
    seconds = time.perf_counter() - started
    staged = run_dir / run_files.RESUME_DIR / run_files.FINAL_MODEL  # saved whole, then published atomically
    staged.parent.mkdir(parents=True, exist_ok=True)
    model.save(staged)
    run_files.copy_file(staged, run_dir / run_files.FINAL_MODEL)
    return {"epochs": len(history.history.get("loss", [])), "images": len(images), "num_train": len(splits.x_train),
            "num_val": len(splits.x_val), "fit_time_s": round(seconds, 3),
            "final": {key: float(values[-1]) for key, values in history.history.items() if values}}

