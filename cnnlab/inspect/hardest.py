"""`cnnlab evaluate --worst N`: the images a model finds hardest, ranked by their own loss.

Scored on the training split, the top of this list is where mislabeled photos hide: a model
that learned the other images of a class gives an image filed under the wrong class a high
loss, however sure it is of what it sees. A helper of evaluate, not a command of its own.
"""

import numpy as np

from cnnlab.tracking import plots
from cnnlab.rundir import files as run_files
from cnnlab.tracking.tables import RIGHT, Column, format_table

EPSILON = 1e-7  # Keras' backend epsilon, which its cross-entropy clips probabilities to, so the losses match Keras'
COLUMNS = (Column("rank", RIGHT), Column("image"), Column("label"), Column("predicted"), Column("confidence", RIGHT),
           Column("loss", RIGHT))


def per_image_loss(probabilities, labels):
    """Each image's cross-entropy: minus the log of the probability the model gives its label.

    The loss cnnlab's classifiers train with (sparse categorical or binary cross-entropy,
    without label smoothing), image by image, so the ranking is the training loss's own.
    """
    given = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return -np.log(np.clip(given, EPSILON, 1 - EPSILON))


def highest_loss(probabilities, labels, class_names, count, names=None):
    """The `count` images of highest loss, highest first, as plain data for the report; ties keep the images' order."""
    losses = per_image_loss(probabilities, labels)
    predicted = probabilities.argmax(axis=1)
    order = np.argsort(-losses, kind="stable")[:count]
    return [{"rank": rank, "index": int(i), "file": names[i] if names is not None else None,
             "label": class_names[labels[i]], "predicted": class_names[predicted[i]],
             "confidence": float(probabilities[i, predicted[i]]), "loss": float(losses[i])}
            for rank, i in enumerate(order, start=1)]


def image_label(entry):
    """How a person finds the image again: its file where it has one, else its position in the split."""
    return entry["file"] if entry["file"] is not None else f"#{entry['index']}"


def contact_sheet_path(paths, split):
    return paths.report.parent / f"{split}_highest_loss.png"


def write_contact_sheet(path, entries, images, title):
    """The images side by side, each with its label, the prediction and the loss, for a person to judge the labels."""
    from pathlib import Path

    captions = [f"{Path(image_label(e)).name}\nlabel: {e['label']}\npredicted: {e['predicted']}\nloss {e['loss']:.2f}"
                for e in entries]
    fig = plots.plot_image_grid(images[[e["index"] for e in entries]], captions, title=title, empty_text="no images")
    run_files.save_figure(fig, path)


def format_highest_loss(entries, split):
    """An aligned table, highest loss first, under a line that says what it ranks."""
    rows = [(str(e["rank"]), image_label(e), e["label"], e["predicted"], f"{e['confidence']:.2f}", f"{e['loss']:.4f}")
            for e in entries]
    return f"The {len(entries)} {split} images of highest loss (label is the one on file):\n" + format_table(COLUMNS, rows)
