"""A trained run loaded for use (evaluate, predict, export, visualize): config, classes, preprocessing, and its model:
final.keras where train.final_fit made one (retrained on training + validation), else best.keras."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError, RunError, first_line
from cnnlab.rundir.files import (CLASS_NAMES, CONFIG, FINAL_MODEL, METRICS, MODEL, PREPROCESSING, STATUS, is_run_dir, read_json,
                                 read_status)


@dataclass(frozen=True)
class TrainedRun:
    """What evaluate and predict need from a run folder: its config, classes, preprocessing and best model."""

    path: Path
    config: object  # cnnlab.config.experiment.ExperimentConfig
    class_names: tuple
    preprocessing: dict  # preprocessing.json as train wrote it
    model: object  # keras.Model
    model_file: str = MODEL  # the file `model` was loaded from: best.keras, or final.keras (train.final_fit)
    final_epochs: int | None = None  # final.keras's epochs on training + validation; None for best.keras

    @property
    def model_description(self):
        """How evaluate, predict and export name the model they use, so a person knows which of the two it is."""
        if self.final_epochs is None:
            return f"{self.model_file} (the best epoch on validation)"
        return f"{self.model_file} (retrained on training + validation for {self.final_epochs} epochs)"

    @property
    def trained_on_val(self):
        """Whether the model learnt from the validation split, which then measures nothing held out."""
        return self.final_epochs is not None

    @property
    def members(self):
        """The runs whose probabilities are averaged: this one; an Ensemble has several."""
        return (self,)

    def probabilities(self, inputs, tta=None):
        """Preprocessed inputs → (N, classes) probabilities, averaged over the --tta views when given."""
        return average_probabilities([self.model], len(self.class_names), inputs, tta)


def average_probabilities(models, num_classes, inputs, tta=None):
    """The mean of every model's probabilities over every view of `inputs` (the inputs themselves without `tta`).

    Probabilities are averaged, not logits: each member's softmax is its own calibrated
    vote, and a sigmoid model's one output becomes two probabilities first, so members of
    either kind of two-class head can be mixed.
    """
    from cnnlab.data.tta import apply_view

    views = tta.views if tta is not None else (None,)
    parts = [class_probabilities(model.predict_on_batch(inputs if view is None else apply_view(inputs, view)), num_classes)
             for model in models for view in views]
    return parts[0] if len(parts) == 1 else np.mean(np.stack(parts), axis=0)


def class_probabilities(outputs, num_classes):
    """Model outputs as (N, num_classes); a single sigmoid unit is the probability of the second of two classes."""
    outputs = np.asarray(outputs)
    if outputs.shape[-1] == 1 and num_classes == 2:
        return np.concatenate([1 - outputs, outputs], axis=-1)
    return outputs


def load_trained_run(run_dir):
    """Reads a run folder and loads its best model; every missing or inconsistent piece is one RunError line."""
    from cnnlab.config.experiment import load_config

    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    model_path = run_dir / MODEL
    if not model_path.is_file():
        status = read_status(run_dir)
        state = f"{status.state}: {status.reason}" if status.reason else status.state
        raise RunError(f"{run_dir}: no {MODEL} in this run folder (status {state}); train a model first or pick another run")
    config = load_config(run_dir / CONFIG)
    class_names = read_class_names(run_dir / CLASS_NAMES)
    record = read_preprocessing(run_dir / PREPROCESSING)
    final_epochs = final_fit_epochs(run_dir)
    if final_epochs is not None:
        model_path = run_dir / FINAL_MODEL
    model = load_model(model_path)
    check_model_fits(model, model_path, record, class_names)
    return TrainedRun(path=run_dir, config=config, class_names=class_names, preprocessing=record, model=model,
                      model_file=model_path.name, final_epochs=final_epochs)


def final_fit_epochs(run_dir):
    """The epochs of train.final_fit's final.keras where the run completed one (metrics.json records it), else None.

    A final.keras without that record (a run interrupted while publishing it) is not used: best.keras is.
    """
    if not (run_dir / FINAL_MODEL).is_file() or not (run_dir / METRICS).is_file():
        return None
    metrics = read_json(run_dir / METRICS)
    record = metrics.get("final_fit") if isinstance(metrics, dict) else None
    epochs = record.get("epochs") if isinstance(record, dict) else None
    return epochs if isinstance(epochs, int) and epochs > 0 else None


def check_run_dir(run_dir):
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"{run_dir}: run folder not found")
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: is not a folder; expected a run folder made by cnnlab train")
    if not is_run_dir(run_dir):
        raise RunError(f"{run_dir}: not a run folder (no {CONFIG}, {STATUS} or {MODEL}); expected a folder made by cnnlab train")


def read_class_names(path):
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RunError(f"{path}: expected a non-empty JSON list of class names")
    return tuple(names)


def read_preprocessing(path):
    """preprocessing.json, checked enough that evaluate and predict can rely on it."""
    from cnnlab.data.preprocessing import output_shape, preprocessing_from_record

    record = read_json(path)
    try:
        shape = record["image_shape"]
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ValueError(f"image_shape {shape!r}")
        output_shape(preprocessing_from_record(record), shape)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise RunError(f"{path}: expected the image_shape, color_mode, image_size, pad_to and rescale that train records; bad or missing {exc}") from exc
    return record


def load_model(path):
    """keras.models.load_model with its safe mode on (a .keras file cannot run arbitrary code), without its compile state.

    A trained model is only ever run here: evaluate compiles it from the run's config.
    The compile state could not travel anyway: Keras on PyTorch saves its optimizer as
    `keras.src.backend.torch.optimizers...`, which another backend would import, PyTorch
    with it (a crash in one process with TensorFlow), or fail to find where it is absent.
    """
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # zip, HDF5 and deserialisation failures all come as different types
        raise RunError(f"{path}: cannot load the model: {first_line(exc)}") from exc


def check_model_fits(model, model_path, record, class_names):
    """The model must take what preprocessing.json produces and output one value per class (or one sigmoid for two)."""
    from cnnlab.data.preprocessing import check_input_shape, output_shape, preprocessing_from_record

    prep = preprocessing_from_record(record)
    produced = list(output_shape(prep, record["image_shape"]))
    expected = list(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    try:
        if expected is None:
            raise ConfigError(None, "several inputs")
        check_input_shape(prep, record["image_shape"], expected)
    except ConfigError:
        raise RunError(f"{model_path}: takes inputs of shape {expected} but {PREPROCESSING} turns the run's "
                       f"{record['image_shape']} images into {produced}; the run folder's files disagree") from None
    units = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
    if units != len(class_names) and not (units == 1 and len(class_names) == 2):
        raise RunError(f"{model_path}: outputs {units} values per image but {CLASS_NAMES} lists {len(class_names)} classes")
