"""`cnnlab export`: a run's best model as a TensorFlow SavedModel and TensorFlow Lite files, each checked before it is kept.

Every exported model takes what `cnnlab predict` gives a run's model before preprocessing
(uint8 images at the run's stored image shape, in its colour mode) and does the run's own
resize, pad and rescale inside, so a server or a phone feeds it raw pixels. Each is built
and checked in a hidden staging folder: its predictions on the run's held-out images are
compared with best.keras (top-1 agreement; float formats must agree on at least 99.5%),
and only when every requested format passes are the files moved into the export folder
and described in export.json. A failure leaves the export folder as it was.

The SavedModel is written with Keras 3's ExportArchive and the TFLite files are converted
from it (TFLiteConverter.from_saved_model), the path Keras' own LiteRT export takes; only
TensorFlow Lite's built-in operators are allowed, so a file runs in any LiteRT interpreter.
"""

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from cnnlab.rundir import ensemble, files as run_files, staging as run_staging
from cnnlab.errors import ExportError, first_line, short_repr, suggest
from cnnlab.rundir.held_out import load_split
from cnnlab.data.images import run_image_spec
from cnnlab.data.preprocessing import output_shape, preprocessing_from_record
from cnnlab.data.tta import make_tta
from cnnlab.deploy.inference import (INPUT_NAME, OUTPUT_NAME, PREDICT_BATCH, SavedModelRunner, TFLiteRunner, keras_probabilities,
                                     predict_in_batches)

FLOAT_AGREEMENT = 0.995  # top-1 agreement with best.keras a float export must reach on the held-out images
REPRESENTATIVE_IMAGES = 200  # training images the int8 converter calibrates activation ranges on (TF suggests 100-500)
ALL = "all"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    description: str
    quantization: Optional[str]  # None (float32), "dynamic-range" or "int8"

    @property
    def required_agreement(self):
        """Float formats must agree with best.keras; a quantised one's agreement and accuracy change are reported."""
        return FLOAT_AGREEMENT if self.quantization is None else None


FORMATS = {fmt.name: fmt for fmt in (
    ExportFormat("savedmodel", "TensorFlow SavedModel (TF Serving), float32", None),
    ExportFormat("tflite", "TensorFlow Lite, float32", None),
    ExportFormat("tflite-dynamic", "TensorFlow Lite, dynamic-range quantised: int8 weights, float32 activations", "dynamic-range"),
    ExportFormat("tflite-int8", "TensorFlow Lite, full integer: int8 weights and activations, uint8 input and output", "int8"),
)}


@dataclass(frozen=True)
class ExportResult:
    run_dir: Path
    folder: Path
    held_out: str  # description of the images the files were checked on
    num_images: int
    keras_accuracy: float
    entries: dict  # format name → its export.json entry, for the formats exported now
    model_file: str = run_files.MODEL  # what was exported: best.keras, or final.keras (train.final_fit)
    model: str = ""  # how it was trained, said where it is final.keras
    reference: str = "best.keras"  # what the files were checked against


def parse_formats(values):
    """--format values (repeatable, comma-separated, `all`) as format names in FORMATS' order, each once."""
    names = []
    for value in values:
        for name in (part.strip() for part in str(value).split(",")):
            if name == ALL:
                names += list(FORMATS)
            elif name in FORMATS:
                names.append(name)
            else:
                raise ExportError(f"--format: unknown export format {short_repr(name)}{suggest(name, [*FORMATS, ALL])}; valid formats: {', '.join(FORMATS)}, "
                                  f"or {ALL}. Received: format={short_repr(value)}")
    if not names:
        raise ExportError(f"--format: give at least one of {', '.join(FORMATS)}, or {ALL}")
    return [name for name in FORMATS if name in names]


def export_run(run_dir, formats, output=None, warn=None, show_logs=False, tta=None):
    """Exports the run's model (best.keras, or final.keras after train.final_fit) in each of `formats` into --output
    or <run>/export/, checked; returns an ExportResult.

    `run_dir` may name several runs or a folder of them: one model is exported that runs every
    member and averages their probabilities, checked against that average on the held-out
    split they share. `tta`: that many fixed views of each image (data/tta.py), averaged inside
    the exported model. `warn` is told when a run did not complete; `show_logs` lets the
    TensorFlow Lite converter's own log lines through (cnnlab --debug).
    """
    names = parse_formats(formats)
    run = ensemble.load_runs(run_dir)
    prep = preprocessing_from_record(run.preprocessing)
    views = make_tta(run.config, output_shape(prep, run.preprocessing["image_shape"]), tta)
    held_out = ensemble.same_split(run.members, lambda member: load_split(member, None))
    if not len(held_out.images):
        raise ExportError(f"{held_out.description}: is empty, so there is nothing to check an export against; "
                          "train with data.test_split or train.validation_split above 0")
    for member in run.members:
        status = run_files.read_status(member.path)
        if status.state != run_files.COMPLETED and warn is not None:
            reason = f" ({status.reason})" if status.reason else ""
            warn(f"{member.path} status is {status.state}{reason}: exporting its {member.model_file} so far")
    folder = run_staging.export_folder(run.path, output)
    record = base_record(run, folder)
    reference = reference_probabilities(run, held_out.images, views)
    keras_accuracy = float(np.mean(reference.argmax(axis=1) == held_out.labels))
    sample = representative_sample(run) if any(FORMATS[name].quantization == "int8" for name in names) else None
    entries = {}
    with run_staging.export_staging(folder) as staging:
        saved_model = staging / run_files.EXPORT_FILES["savedmodel"]
        write_saved_model(run, saved_model, views)
        staged = {}
        for name in names:
            fmt = FORMATS[name]
            staged[name], runner, converter = build_format(run, fmt, saved_model, staging, sample, show_logs)
            entries[name] = {
                "file": run_files.EXPORT_FILES[name],
                "format": name,
                "description": fmt.description,
                "size_bytes": run_staging.size_in_bytes(staged[name]),
                "input": runner.input_spec(),
                "output": runner.output_spec(),
                "check": check_export(run, fmt, runner, held_out, reference, keras_accuracy),
                "converter": converter,
                "tta": views.record() if views is not None else None,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            if fmt.quantization == "int8":
                entries[name]["representative_images"] = f"{len(sample)} of the run's training images, picked with its seed"
        for name in names:
            run_staging.publish(staged[name], folder / run_files.EXPORT_FILES[name], staging)
        record["formats"].update(entries)
        run_files.write_json(folder / run_files.EXPORT_RECORD, record)
    reference = (f"ensemble (mean of {len(run.members)} runs)" if ensemble.is_ensemble(run) else run.model_file) + (
        f" over {len(views.views)} TTA views" if views is not None else "")
    return ExportResult(run_dir=run.path, folder=folder, held_out=held_out.description, num_images=len(held_out.images),
                        keras_accuracy=keras_accuracy, entries=entries, reference=reference, model_file=run.model_file,
                        model=run.model_description if run.trained_on_val else "")


def base_record(run, folder):
    """export.json as it stands in `folder` (its earlier formats kept), or a new one.

    An --output folder that holds another run's exports is refused: one export.json describes one run.
    """
    record_path = folder / run_files.EXPORT_RECORD
    spec = run_image_spec(run)
    record = {
        "run": str(run.path.resolve()),
        "class_names": list(run.class_names),
        "images": {"dtype": "uint8", "shape": list(spec.shape), "color_mode": spec.color_mode,
                   "antialias": spec.antialias, "background": spec.background,
                   "note": "every exported model takes these images as they are (pixels 0..255); the run's resize, pad "
                           "and rescale (preprocessing) happen inside it. cnnlab predict --model resizes larger images "
                           "bilinearly to this shape, with antialias as given here"},
        "preprocessing": run.preprocessing,
        **({"ensemble": run.record()} if ensemble.is_ensemble(run) else {}),
        "formats": {},
    }
    if record_path.exists():
        existing = run_files.read_json(record_path)
        if not isinstance(existing, dict) or not isinstance(existing.get("formats"), dict):
            raise ExportError(f"{record_path}: not an export record of cnnlab export; give --output another folder")
        own = folder.resolve() == (run.path / run_files.EXPORT_DIR).resolve()  # a run folder moved or copied keeps its exports
        if not own and existing.get("run") != record["run"]:
            raise ExportError(f"{folder}: holds the exports of another run ({existing.get('run')}); give --output another folder")
        record["formats"] = dict(existing["formats"])
    return record


# ---------------------------------------------------------------- building the files


def reference_probabilities(run, images, views):
    """What the exported files must reproduce: best.keras' probabilities, or the ensemble's and views' average of them."""
    if not ensemble.is_ensemble(run) and views is None:
        return keras_probabilities(run, images)
    from cnnlab.data.preprocessing import preprocess_images

    prep = preprocessing_from_record(run.preprocessing)
    parts = [run.probabilities(preprocess_images(images[start:start + PREDICT_BATCH], prep), views)
             for start in range(0, len(images), PREDICT_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, len(run.class_names)), np.float32)


def serving_function(run, views=None):
    """uint8 images → class probabilities: the run's own preprocessing, then best.keras in inference mode.

    `training=False` makes Dropout and Keras' random augmentation layers (RandomFlip, ...)
    pass images through and BatchNormalization use its moving statistics, as predict does.
    A single sigmoid unit becomes two probabilities, as cnnlab predict shows it. An
    ensemble's members, and the --tta views, are each run and their probabilities averaged,
    in the order trained.average_probabilities averages them, so the files match it.
    """
    import tensorflow as tf

    from cnnlab.data.preprocessing import preprocess_images
    from cnnlab.data.tta import apply_view

    prep = preprocessing_from_record(run.preprocessing)
    num_classes = len(run.class_names)

    def probabilities(model, inputs):
        outputs = tf.cast(model(inputs, training=False), tf.float32)
        if model.output_shape[-1] == 1 and num_classes == 2:
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        return outputs

    def serve(images):
        inputs = preprocess_images(images, prep)
        parts = [probabilities(member.model, inputs if view is None else apply_view(inputs, view))
                 for member in run.members for view in (views.views if views is not None else (None,))]
        return {OUTPUT_NAME: parts[0] if len(parts) == 1 else tf.add_n(parts) / float(len(parts))}

    return serve


def build_format(run, fmt, saved_model, staging, sample, show_logs):
    """(staged path, a runner of it, how it was made) for one format; every format but savedmodel is converted from the SavedModel."""
    if fmt.name == "savedmodel":
        import keras

        return saved_model, SavedModelRunner(saved_model), f"keras.export.ExportArchive (Keras {keras.__version__})"
    path = staging / run_files.EXPORT_FILES[fmt.name]
    converter = convert_to_tflite(run, saved_model, path, fmt, sample, show_logs)
    return path, TFLiteRunner(path), converter


def input_signature(run):
    import tensorflow as tf

    return [tf.TensorSpec([None, *run.preprocessing["image_shape"]], tf.uint8, name=INPUT_NAME)]


def write_saved_model(run, path, views=None):
    """The SavedModel, with one signature (serving_default, also named serve) as TF Serving expects."""
    import keras

    archive = keras.export.ExportArchive()
    for member in run.members:
        archive.track(member.model)
    archive.add_endpoint("serve", serving_function(run, views), input_signature=input_signature(run))
    try:
        archive.write_out(str(path), verbose=False)
    except Exception as exc:  # tracing and saving fail in many of TensorFlow's error types
        raise ExportError(f"{run.path / run_files.MODEL}: cannot be written as a SavedModel: {first_line(exc)}") from exc


def convert_to_tflite(run, saved_model, path, fmt, sample, show_logs):
    """Converts the staged SavedModel to a .tflite file at `path`; returns the converter's description for export.json.

    `sample`: uint8 training images that full-integer quantisation calibrates its activation ranges on.
    """
    import tensorflow as tf

    from cnnlab.runtime.tf_logs import tflite_logs_hidden

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no TF Select: the file runs in any LiteRT
    if fmt.quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.quantization == "int8":
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in sample)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8  # raw pixels, as every other format takes them
        converter.inference_output_type = tf.uint8  # probabilities in steps of 1/256; the runner dequantises them
    try:
        with tflite_logs_hidden(show=show_logs):
            content = converter.convert()
    except Exception as exc:  # the converter's ConverterError is not public API
        raise ExportError(conversion_failure(run, fmt, exc)) from exc
    run_files.write_bytes(path, content)
    return f"tf.lite.TFLiteConverter.from_saved_model (TensorFlow {tf.__version__})"


def conversion_failure(run, fmt, exc):
    """One line for a failed conversion: the operators TensorFlow Lite's built-ins lack, or the converter's first words."""
    message = str(exc)
    missing = sorted({op for line in message.splitlines() if line.strip().startswith("TF Select ops:")
                      for op in line.split(":", 1)[1].replace(" ", "").split(",") if op})
    where = f"{run.path / run_files.MODEL}: cannot be exported as {fmt.name}"
    if missing:
        return (f"{where}: TensorFlow Lite's built-in operators have no {', '.join(missing)}, which the model uses; "
                "export a model without it, or --format savedmodel")
    return f"{where}: the TensorFlow Lite converter failed: {first_line(exc)}"


def representative_sample(run):
    """Up to REPRESENTATIVE_IMAGES of the run's own training split (uint8, re-made as training made it), picked with its seed."""
    from cnnlab.data.sources import load_dataset

    config = run.config
    images = load_dataset(config.data, config.train.validation_split, config.seed, config.train.fold).x_train
    rng = np.random.default_rng(run.config.seed)
    picked = rng.choice(len(images), size=min(REPRESENTATIVE_IMAGES, len(images)), replace=False)
    return images[np.sort(picked)]


# ---------------------------------------------------------------- checking them


def check_export(run, fmt, runner, held_out, reference, keras_accuracy):
    """Runs the staged file on the held-out images and compares it with best.keras: export.json's "check".

    A float format whose top-1 agreement is below FLOAT_AGREEMENT is refused.
    """
    probabilities = predict_in_batches(runner, held_out.images)
    agreement = float(np.mean(probabilities.argmax(axis=1) == reference.argmax(axis=1)))
    accuracy = float(np.mean(probabilities.argmax(axis=1) == held_out.labels))
    required = fmt.required_agreement
    if required is not None and agreement < required:
        raise ExportError(f"{run.path / run_files.MODEL}: its {fmt.name} export agrees with it on only {agreement:.2%} of the "
                          f"{len(held_out.images)} held-out images ({held_out.description}), below the {required:.1%} "
                          "a float export must reach; nothing was written")
    return {
        "images": held_out.description,
        "num_images": int(len(held_out.images)),
        "top1_agreement": agreement,
        "required_agreement": required,
        "max_probability_difference": float(np.max(np.abs(probabilities - reference))),
        "accuracy_best_keras": keras_accuracy,
        "accuracy_exported": accuracy,
        "accuracy_change": accuracy - keras_accuracy,
        "checked_with": runner.name,
    }




# ---------------------------------------------------------------- output


def format_result(result):
    """What was exported, each format's size, agreement and accuracy, as a short aligned table."""
    from cnnlab.tracking.tables import RIGHT, Column, format_table

    columns = (Column("FORMAT"), Column("FILE"), Column("SIZE", RIGHT), Column("AGREEMENT", RIGHT), Column("ACCURACY", RIGHT),
               Column("CHANGE", RIGHT))
    rows = []
    for name, entry in result.entries.items():
        check = entry["check"]
        file = entry["file"] + ("/" if name == "savedmodel" else "")
        rows.append((name, file, human_size(entry["size_bytes"]), f"{check['top1_agreement']:.2%}",
                     f"{check['accuracy_exported']:.4f}", f"{check['accuracy_change']:+.4f}"))
    lines = [f"Run: {result.run_dir}", *([f"Model: {result.model}"] if result.model else []),
             f"Checked on: {result.held_out} ({result.num_images} images); {result.reference} accuracy {result.keras_accuracy:.4f}",
             "", format_table(columns, rows), "",
             f"Wrote {result.folder}/: {', '.join(entry['file'] for entry in result.entries.values())}, {run_files.EXPORT_RECORD}"]
    return "\n".join(lines)


def human_size(size):
    if size < 1024:
        return f"{size} B"
    return f"{size / 1024:.1f} KB" if size < 1024 ** 2 else f"{size / 1024 ** 2:.1f} MB"
