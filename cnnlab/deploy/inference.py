"""Running a model on uint8 images, whichever form it has: a run's best.keras, or a file `cnnlab export` wrote.

An exported model (a TensorFlow Lite file or a SavedModel folder) carries the run's
preprocessing inside it: it takes the images `cnnlab predict` makes, uint8 at the run's
stored image shape, and gives one probability per class. Its class names and the images
it takes are in the export folder's export.json, which is how `cnnlab predict --model`
knows them. A library module: predict and export both use it.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.rundir import files as run_files
from cnnlab.errors import RunError, first_line, one_line, short_repr
from cnnlab.data.images import ImageSpec
from cnnlab.rundir.trained import class_probabilities  # noqa: F401  (evaluate and predict import it from here)

INPUT_NAME = "images"  # the exported models' one input: uint8 (batch, height, width, channels)
OUTPUT_NAME = "probabilities"  # and their one output: (batch, classes), in the run's class order
INTERPRETERS = ("litert", "tensorflow")  # ai_edge_litert's interpreter when installed, else TensorFlow's tf.lite
PREDICT_BATCH = 64


def keras_probabilities(run, images, batch_size=PREDICT_BATCH):
    """The run's best.keras on uint8 images at the stored shape, through the run's own preprocessing: (N, classes)."""
    from cnnlab.data.array_batches import make_dataset
    from cnnlab.data.preprocessing import preprocessing_from_record

    dataset = make_dataset(images, np.zeros(len(images), dtype=np.int32), preprocessing_from_record(run.preprocessing), batch_size)
    return class_probabilities(run.model.predict(dataset, verbose=0), len(run.class_names))


def predict_in_batches(runner, images, batch_size=PREDICT_BATCH):
    """An exported model's runner over many images, a batch at a time: (N, classes) float32."""
    parts = [runner(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- an exported model, with what export.json says of it


@dataclass(frozen=True)
class ExportedModel:
    """A file `cnnlab export` wrote, ready to predict, with the class names and images export.json records for it."""

    path: Path
    format: str  # savedmodel | tflite | tflite-dynamic | tflite-int8
    run: str  # the run folder it was exported from
    class_names: tuple
    image_spec: ImageSpec
    runner: object  # SavedModelRunner or TFLiteRunner
    tta: dict = None  # the test-time augmentation views exported inside it (export --tta), as export.json records them

    def predict(self, images):
        """uint8 (N, H, W, C) at the stored image shape → (N, classes) probabilities."""
        return self.runner(images)


def load_exported(path, interpreter=None):
    """The exported model at `path` (a .tflite file or a SavedModel folder) with its entry of export.json beside it.

    `interpreter` picks the TensorFlow Lite interpreter (one of INTERPRETERS); default: LiteRT
    where installed, else TensorFlow's. Every missing or inconsistent piece is one RunError line.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: not found; expected a .tflite file or a SavedModel folder written by cnnlab export")
    record_path = path.parent / run_files.EXPORT_RECORD
    if not record_path.is_file():
        raise RunError(f"{path}: no {run_files.EXPORT_RECORD} beside it in {path.parent}, which names the model's classes and the "
                       f"images it takes; use a file written by cnnlab export RUN_DIR (it writes {run_files.EXPORT_RECORD} too)")
    record = run_files.read_json(record_path)
    name, entry = export_entry(record, path, record_path)
    spec, class_names = record_image_spec(record, record_path)
    if name == "savedmodel":
        if not path.is_dir():
            raise RunError(f"{path}: {record_path} lists it as a SavedModel folder, but it is a file")
        runner = SavedModelRunner(path)
    else:
        if not path.is_file():
            raise RunError(f"{path}: {record_path} lists it as a TensorFlow Lite file, but it is a folder")
        runner = TFLiteRunner(path, interpreter=interpreter)
    return ExportedModel(path=path, format=name, run=str(record.get("run")), class_names=class_names, image_spec=spec,
                         runner=runner, tta=entry.get("tta") if isinstance(entry.get("tta"), dict) else None)


def export_entry(record, path, record_path):
    """(format, entry) of export.json that describes `path`'s file."""
    formats = record.get("formats") if isinstance(record, dict) else None
    if not isinstance(formats, dict):
        raise RunError(f"{record_path}: expected a JSON object with 'formats', as cnnlab export writes")
    for name, entry in formats.items():
        if isinstance(entry, dict) and entry.get("file") == path.name:
            return name, entry
    listed = ", ".join(str(entry.get("file")) for entry in formats.values() if isinstance(entry, dict)) or "nothing"
    raise RunError(f"{path}: not listed in {record_path} (it lists {listed}); export it again with cnnlab export RUN_DIR --format ...")


def record_image_spec(record, record_path):
    """(ImageSpec, class names) from export.json, checked enough to rely on."""
    try:
        images = record["images"]
        shape = tuple(images["shape"])
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise ValueError(f"images.shape {list(shape)}")
        if images["color_mode"] not in ("grayscale", "rgb"):
            raise ValueError(f"images.color_mode {images['color_mode']!r}")
        background = images.get("background")
        spec = ImageSpec(shape=shape, color_mode=images["color_mode"], antialias=bool(images["antialias"]),
                         background=background if background in ("dark", "light") else None)
        names = record["class_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("class_names")
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{record_path}: expected the images (shape, color_mode, antialias) and class_names that cnnlab "
                       f"export records; bad or missing {one_line(exc)}") from exc
    return spec, tuple(names)


# ---------------------------------------------------------------- the two kinds of file


class SavedModelRunner:
    """A SavedModel folder's serving_default signature: uint8 images in, probabilities out."""

    def __init__(self, path):
        import tensorflow as tf

        try:
            self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        except Exception as exc:  # a damaged folder fails in several of TensorFlow's error types
            raise RunError(f"{path}: cannot load as a SavedModel: {first_line(exc)}") from exc
        self.name = f"tf.saved_model.load (TensorFlow {tf.__version__})"

    def __call__(self, images):
        import tensorflow as tf

        return self.function(**{INPUT_NAME: tf.constant(images, dtype=tf.uint8)})[OUTPUT_NAME].numpy()

    def input_spec(self):
        (spec,) = self.function.structured_input_signature[1].values()
        return {"name": INPUT_NAME, "dtype": spec.dtype.name, "shape": list(spec.shape)}

    def output_spec(self):
        spec = self.function.structured_outputs[OUTPUT_NAME]
        return {"name": OUTPUT_NAME, "dtype": spec.dtype.name, "shape": list(spec.shape), "quantization": None}


class TFLiteRunner:
    """A TensorFlow Lite file in an interpreter: uint8 images in, probabilities out (a uint8 output is dequantised)."""

    def __init__(self, path, interpreter=None, threads=None):
        from cnnlab.runtime.cores import usable_cores
        from cnnlab.runtime.tf_logs import tflite_logs_hidden

        self.interpreter, self.name = tflite_interpreter(path, threads or usable_cores(), interpreter)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None
        if self.input["dtype"] != np.uint8:
            raise RunError(f"{path}: takes {np.dtype(self.input['dtype']).name} input, not the uint8 images cnnlab export writes")
        with tflite_logs_hidden():
            self.resize(1)  # the XNNPACK delegate announces itself here, on descriptor 2

    def resize(self, batch):
        shape = [batch, *self.input["shape_signature"][1:]]
        self.interpreter.resize_tensor_input(self.input["index"], shape)
        self.interpreter.allocate_tensors()
        self.batch = batch

    def __call__(self, images):
        if len(images) != self.batch:
            self.resize(len(images))
        self.interpreter.set_tensor(self.input["index"], np.ascontiguousarray(images, dtype=np.uint8))
        self.interpreter.invoke()
        outputs = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output["quantization"]
        if outputs.dtype != np.float32 and scale:
            return (outputs.astype(np.float32) - zero_point) * np.float32(scale)
        return outputs.astype(np.float32, copy=False)

    def input_spec(self):
        return tensor_spec(self.input, INPUT_NAME)

    def output_spec(self):
        return tensor_spec(self.output, OUTPUT_NAME)


def tensor_spec(details, name):
    """An interpreter's tensor details as export.json records them: a batch dimension of -1 is null, as in a SavedModel."""
    scale, zero_point = details["quantization"]
    return {"name": name, "dtype": np.dtype(details["dtype"]).name,
            "shape": [None if size < 0 else int(size) for size in details["shape_signature"]],
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}


def tflite_interpreter(path, threads, which=None):
    """(interpreter, its name) for a .tflite file: LiteRT's where installed, else TensorFlow's tf.lite.Interpreter.

    LiteRT (pip install ai-edge-litert, or cnnlab[litert]) is the maintained one; TensorFlow's
    still works in 2.21 but warns that it is deprecated, which is kept off the terminal.
    """
    if which not in (None, *INTERPRETERS):
        raise RunError(f"interpreter: expected one of {', '.join(INTERPRETERS)}, received {short_repr(which)}")
    interpreter_class, name = None, None
    if which in (None, "litert"):
        try:
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter as interpreter_class

            name = f"LiteRT {getattr(ai_edge_litert, '__version__', '')}".strip()
        except ImportError:
            if which == "litert":
                raise RunError("interpreter litert: ai_edge_litert is not installed (pip install ai-edge-litert)") from None
    if interpreter_class is None:
        import tensorflow as tf

        interpreter_class, name = tf.lite.Interpreter, f"tf.lite.Interpreter (TensorFlow {tf.__version__})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TensorFlow's: "tf.lite.Interpreter is deprecated ..."
            return interpreter_class(model_path=str(path), num_threads=threads), name
    except (ValueError, RuntimeError) as exc:
        raise RunError(f"{path}: cannot load as a TensorFlow Lite model: {first_line(exc)}") from exc


