"""`cnnlab predict`: class probabilities for image files, from a run's best model or a model `cnnlab export` wrote.

Each image takes the path its training images took: decoded, brought to the run's
colour mode and stored image shape (preprocessing.json image_shape), then the run's
own resize/pad/scale from `cnnlab.preprocess` (an exported model does that inside
itself, so it gets the uint8 image). A problem with one image is reported for that
image and the others are still predicted, in batches.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from cnnlab.rundir import listing
from cnnlab.errors import DataError, short_repr
from cnnlab.data.images import run_image_spec
from cnnlab.deploy.inference import ExportedModel
from cnnlab.data.preprocessing import output_shape, preprocess_images, preprocessing_from_record
from cnnlab.data.tta import make_tta
from cnnlab.data.image_files import DEFAULT_MAX_PIXELS, INVERT_CHOICES, ImageProblem, ImageReader, collect_images

DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class Prediction:
    path: str
    probabilities: np.ndarray  # one per class, in the run's class order
    inverted: Optional[str]  # why the image was inverted, or None

    def top(self, class_names, k):
        """The k most probable classes as (name, probability), most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(class_names[i], float(self.probabilities[i])) for i in order]


def choose_run(run_dir, runs_dir):
    """The run folder(s) to use and how they were chosen: --run as given, else the newest completed run under `runs_dir`.

    `run_dir`: one folder, or several (--run repeated) that ensemble.load_runs makes one model of.
    """
    if run_dir:
        return ([Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else Path(run_dir)), "given with --run"
    return listing.newest_completed_run(runs_dir), f"the newest completed run in {runs_dir}; --run RUN_DIR picks another"


def prediction_tta(run, n):
    """The --tta views for `run` (a TrainedRun or an Ensemble); an exported model has what it was exported with."""
    if n is None:
        return None
    if isinstance(run, ExportedModel):
        raise DataError(f"--tta: {run.path} runs as it was exported ({tta_of_export(run)}); "
                        "give --run RUN_DIR for test-time augmentation, or export with --tta N")
    prep = preprocessing_from_record(run.preprocessing)
    return make_tta(run.config, output_shape(prep, run.preprocessing["image_shape"]), n)


def tta_of_export(model):
    return "with test-time augmentation inside" if model.tta else "without test-time augmentation"


def predict_images(run, paths, invert="auto", max_pixels=DEFAULT_MAX_PIXELS, batch_size=DEFAULT_BATCH_SIZE, tta=None):
    """Yields a Prediction or an ImageProblem per image, in the order given; folders expand to their images.

    `run`: a TrainedRun (its best.keras), an Ensemble (its members' mean) or an ExportedModel;
    `tta`: the views (prediction_tta) whose probabilities are averaged.
    """
    if invert not in INVERT_CHOICES:
        raise DataError(f"invert: expected one of {', '.join(INVERT_CHOICES)}, received {short_repr(invert)}")
    spec = run.image_spec if isinstance(run, ExportedModel) else run_image_spec(run, with_background=invert == "auto")
    reader = ImageReader(spec, invert, max_pixels)
    items = list(collect_images(paths))
    for start in range(0, len(items), batch_size):
        results = [item if isinstance(item, ImageProblem) else reader.read(item) for item in items[start:start + batch_size]]
        ready = [r for r in results if not isinstance(r, ImageProblem)]
        probabilities = iter(predict_batch(run, np.stack([pixels for _, pixels, _ in ready]), tta) if ready else [])
        for r in results:
            yield r if isinstance(r, ImageProblem) else Prediction(r[0], next(probabilities), r[2])


def predict_batch(run, images, tta=None):
    """uint8 images at the stored shape → probabilities, through the run's own preprocessing (an exported model's is inside it)."""
    if isinstance(run, ExportedModel):
        return run.predict(images)
    return run.probabilities(preprocess_images(images, preprocessing_from_record(run.preprocessing)), tta)


# ---------------------------------------------------------------- output


def format_prediction(item, class_names, k):
    """`path: bag 0.998, sandal 0.001, ...`, saying when the image was inverted."""
    top = ", ".join(f"{name} {p:.3f}" for name, p in item.top(class_names, k))
    note = f" (inverted: {item.inverted})" if item.inverted else ""
    return f"{item.path}{note}: {top}"


def predictions_document(run_dir, chosen, items, class_names, k, model=None, tta=None, ensemble=None):
    """One JSON-ready document for scripts: the run (and the exported model, with --model), each image's top k, each problem.

    `tta`: the views averaged (None: none); `ensemble`: Ensemble.record() where several runs predicted.
    """
    source = {"model": str(model.path), "model_format": model.format} if model is not None else {}
    return {
        "run": str(run_dir),
        "run_chosen": chosen,
        **source,
        **({"ensemble": ensemble} if ensemble is not None else {}),
        "tta": tta.record() if tta is not None else (model.tta if model is not None else None),
        "top_k": k,
        "predictions": [{"path": item.path, "inverted": item.inverted is not None, "inverted_because": item.inverted,
                         "top": [{"class": name, "probability": p} for name, p in item.top(class_names, k)]}
                        for item in items if isinstance(item, Prediction)],
        "errors": [{"path": item.path, "error": item.message} for item in items if isinstance(item, ImageProblem)],
    }
