"""`cnnlab visualize`: what a trained network learned: its filters, its feature maps for one image, its layers.

The image takes the path `cnnlab predict` gives it (decoded, brought to the run's colour
mode and stored size, inverted where the run's convention asks, then the run's own
preprocessing), so the feature maps are what the model computes when it classifies it.
Without an image the first held-out sample is used, re-made as `cnnlab evaluate` makes it.
Everything goes to <run>/visualize/; file names depend only on layer names, so drawing
again replaces the pictures of the same layers.

A model with `model.augmentation` gets augmentation.png too: the first training images,
each beside a few draws of its random layers in training mode, which is what the network
trains on. The random layers have no feature maps (they pass images through unchanged
outside training), so the feature maps start after them.

Which tile a filter grid shows:
- a Conv2D whose kernels have one input channel (the first layer of a grayscale model):
  each kernel itself;
- the first Conv2D of an RGB model, when it takes the three colour channels: each kernel
  in colour, every channel on the same symmetric scale (mid-grey is zero);
- deeper Conv2D layers: each kernel's mean over its input channels. One channel alone
  would show a sliver of what a filter responds to; the mean shows the spatial pattern
  the filter weights most, and keeps one tile per filter.
"""

import difflib
import html
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.errors import RunError
from cnnlab.runtime import keras_compat
from cnnlab.tracking import plots
from cnnlab.inspect import gradcam
from cnnlab.rundir import files as run_files, listing, trained
from cnnlab.errors import ConfigError, DataError, short_repr
from cnnlab.data.image_files import DEFAULT_MAX_PIXELS, ImageProblem, ImageReader
from cnnlab.data.images import run_image_spec
from cnnlab.data.preprocessing import preprocess_images, preprocessing_from_record
from cnnlab.tracking.tables import RIGHT, Column, format_table

DEFAULT_MAX_MAPS = 32
# Layers whose 4-D output is drawn as feature maps, by Keras class name.
CONV_TYPES = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")
ACTIVATION_TYPES = ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax")
POOLING_TYPES = ("MaxPooling2D", "AveragePooling2D")
FEATURE_MAP_TYPES = CONV_TYPES + ACTIVATION_TYPES + POOLING_TYPES
AUGMENTED_IMAGES = 4  # training images in augmentation.png, one row each
AUGMENTED_DRAWS = 5  # augmented versions of each, beside the image itself
DIAGRAM_HINT = "pip install 'cnnlab[diagram]' (pydot) and apt-get install graphviz"


@dataclass(frozen=True)
class Sample:
    pixels: np.ndarray  # uint8 (H, W, C) at the run's stored image shape, before preprocessing
    description: str  # for people: which image and where it came from
    label: str  # short, for figure titles


@dataclass
class Visualization:
    run_dir: Path
    folder: Path
    sample: Sample
    model_input: np.ndarray  # float32 (H, W, C): the sample after the run's preprocessing
    filters: dict = field(default_factory=dict)  # layer name → tiles (filters, kh, kw) or (filters, kh, kw, 3)
    feature_maps: dict = field(default_factory=dict)  # layer name → that layer's output (h, w, channels) for the sample
    augmentation: list = field(default_factory=list)  # names of the random layers drawn in augmentation.png
    written: list = field(default_factory=list)  # Paths, in the order written
    notes: list = field(default_factory=list)  # one line each, for people
    grad_cam: object = None  # gradcam.GradCam for the sample, where the model has a layer to weigh


def visualize_run(run_dir, image=None, layer=None, max_maps=DEFAULT_MAX_MAPS, html_index=False, invert="auto",
                  max_pixels=DEFAULT_MAX_PIXELS):
    """Draws the run's filters, feature maps for `image` (or the first held-out sample) and architecture.

    Everything is checked (run, layer name, image) before anything is written.
    """
    if max_maps < 1:
        raise ConfigError("--max-maps", f"expected a positive number of channels, received {max_maps}")
    run = trained.load_trained_run(run_dir)
    model = run.model
    filter_layers, map_layers = choose_layers(model, layer)
    sample = read_sample(run, image, invert, max_pixels) if image is not None else first_held_out(run)
    inputs = np.asarray(preprocess_images(sample.pixels[np.newaxis], preprocessing_from_record(run.preprocessing)))
    result = Visualization(run_dir=run.path, folder=run_files.create_visualize_dir(run.path), sample=sample, model_input=inputs[0])

    for conv in filter_layers:
        tiles, rgb = filter_tiles(conv, sees_colour=conv is first_conv2d(model) and model.input_shape[-1] == 3)
        result.filters[conv.name] = tiles
        save(result, plots.plot_filter_grid(tiles, filters_title(conv, rgb), rgb=rgb), run_files.filters_path(run.path, conv.name))
    if not filter_layers and layer is None:
        result.notes.append("no Conv2D layers in this model: nothing to draw for filters")

    result.feature_maps.update(feature_maps(model, inputs, [l.name for l in map_layers]))
    for name, maps in result.feature_maps.items():
        shown = maps[..., :max_maps]
        fig = plots.plot_feature_maps(result.model_input, shown, title=feature_maps_title(model.get_layer(name), sample),
                                      image_title=input_title(sample, result.model_input), total=maps.shape[-1])
        save(result, fig, run_files.feature_maps_path(run.path, name))
    if not map_layers:
        result.notes.append(f"no layer with image-shaped output ({', '.join(FEATURE_MAP_TYPES)}): nothing to draw for feature maps")

    gradcam.draw_for_visualize(result, model, run.class_names, layer if map_layers else None)
    if layer is None:
        draw_augmentation(result, run)
    write_architecture(result, model)
    if html_index:
        write_index(result, run)
    return result


def save(result, fig, path):
    run_files.save_figure(fig, path)
    result.written.append(path)


# ---------------------------------------------------------------- which layers


def is_filter_layer(layer):
    import keras

    return isinstance(layer, keras.layers.Conv2D)


def has_feature_maps(layer):
    """Conv, activation and pooling layers whose output is (batch, height, width, channels)."""
    return type(layer).__name__ in FEATURE_MAP_TYPES and len(output_shape(layer)) == 4


def output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or shared between several calls
        return ()


def first_conv2d(model):
    return next((layer for layer in model.layers if is_filter_layer(layer)), None)


def choose_layers(model, name=None):
    """(Conv2D layers for filter grids, layers for feature maps): all of them, or only `name`'s.

    An unknown name, or a layer with nothing to draw, is a ConfigError that lists the layers that have.
    """
    drawable = [layer for layer in model.layers if is_filter_layer(layer) or has_feature_maps(layer)]
    if name is None:
        return [l for l in drawable if is_filter_layer(l)], [l for l in drawable if has_feature_maps(l)]
    valid = ", ".join(layer.name for layer in drawable) or "none: this model has no Conv2D, activation or pooling layer"
    names = [layer.name for layer in model.layers]
    if name not in names:
        close = difflib.get_close_matches(name, [layer.name for layer in drawable], n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError("--layer", f"no layer named {short_repr(name)} in this model.{hint} Layers with pictures: {valid}")
    chosen = model.get_layer(name)
    if chosen not in drawable:
        raise ConfigError("--layer", f"{name} ({type(chosen).__name__}, output {format_shape(output_shape(chosen))}) "
                          f"has no filters or feature maps to draw. Layers with pictures: {valid}")
    return ([chosen] if is_filter_layer(chosen) else []), ([chosen] if has_feature_maps(chosen) else [])


# ---------------------------------------------------------------- which image


def read_sample(run, image, invert, max_pixels):
    """IMAGE read exactly as `cnnlab predict` reads it; a problem with it is one DataError line."""
    path = Path(image)
    if not path.exists():
        raise DataError(f"{image}: not found")
    if path.is_dir():
        raise DataError(f"{image}: is a folder; give one image file (PNG, JPEG, BMP or GIF)")
    read = ImageReader(run_image_spec(run, with_background=invert == "auto"), invert, max_pixels).read(path)
    if isinstance(read, ImageProblem):
        raise DataError(str(read))
    _, pixels, inverted = read
    note = f" (inverted: {inverted})" if inverted else ""
    return Sample(pixels=pixels, description=f"{image}{note}", label=path.name + (" (inverted)" if inverted else ""))


def first_held_out(run):
    """The first sample of the split `cnnlab evaluate` scores by default: test, or val where there is none."""
    from cnnlab.rundir.held_out import load_split

    try:
        held_out = load_split(run, None)
    except DataError as exc:
        raise DataError(f"{exc}; give an IMAGE to visualize with instead") from exc
    if not len(held_out.images):
        raise DataError(f"{held_out.description}: is empty; give an IMAGE to visualize with instead")
    class_name = run.class_names[int(held_out.labels[0])]
    return Sample(pixels=held_out.images[0], description=f"the first sample of {held_out.description}, class {class_name}",
                  label=f"{held_out.split} sample 0 ({class_name})")


# ---------------------------------------------------------------- what to draw


def filter_tiles(layer, sees_colour=False):
    """(tiles, rgb): one tile per filter of a Conv2D layer; see the module docstring for which."""
    kernel = np.asarray(layer.get_weights()[0], dtype=np.float32)  # (kh, kw, input channels, filters)
    tiles = np.moveaxis(kernel, -1, 0)  # (filters, kh, kw, input channels)
    if sees_colour and tiles.shape[-1] == 3:
        return tiles, True
    return tiles.mean(axis=-1), False  # with one input channel the mean is the kernel itself


def feature_maps(model, inputs, names):
    """{layer name: its output for the first input}, from one intermediate model that outputs every named layer."""
    import keras

    if not names:
        return {}
    probe = keras.Model(model.inputs[0], [model.get_layer(name).output for name in names])  # one input: check_model_fits
    outputs = probe(inputs, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: keras.ops.convert_to_numpy(output)[0] for name, output in zip(names, outputs)}


def filters_title(layer, rgb):
    kh, kw, channels, count = layer.get_weights()[0].shape
    if rgb:
        how = "each kernel in colour (R, G, B on one scale)"
    elif channels == 1:
        how = "each kernel"
    else:
        how = f"each kernel's mean over its {channels} input channels"
    return f"{layer.name} (Conv2D): {count} filters of {kh}×{kw}\n{how}; one symmetric scale, 0 is mid-grey"


def feature_maps_title(layer, sample):
    return f"{layer.name} ({type(layer).__name__}): output {format_shape(output_shape(layer)[1:])} for {sample.label}"


def input_title(sample, model_input):
    return f"input: {sample.label}\n{format_shape(model_input.shape)}, as the model sees it"


def format_shape(shape):
    return "(" + ", ".join("None" if v is None else str(v) for v in shape) + ")"


# ---------------------------------------------------------------- what augmentation makes of the training images


def augmentation_layers(model):
    """The model's random preprocessing layers (model.augmentation), in the order they act."""
    from cnnlab.model.keras_names import AUGMENTATION_LAYERS

    return [layer for layer in model.layers if type(layer).__name__ in AUGMENTATION_LAYERS]


def draw_augmentation(result, run):
    """augmentation.png, for a model with random preprocessing layers; a note where its training images cannot be read."""
    layers = augmentation_layers(run.model)
    if not layers:
        return
    try:
        images, labels = first_training_images(run)
    except DataError as exc:
        result.notes.append(f"no {run_files.AUGMENTATION_PNG}: the training images cannot be read ({exc})")
        return
    prep = preprocessing_from_record(run.preprocessing)
    draws = augmented(layers, np.asarray(preprocess_images(images, prep)), AUGMENTED_DRAWS, run.config.seed)
    tiles, captions = [], []
    for image, label, image_draws in zip(images, labels, draws):
        tiles += [image] + [to_pixels(draw, prep.rescale) for draw in image_draws]
        captions += [f"{run.class_names[int(label)]}: as stored"] + [f"draw {i + 1}" for i in range(len(image_draws))]
    names = ", ".join(layer.name for layer in layers)
    title = f"What the network trains on: training images through {names} (training mode)"
    save(result, plots.plot_image_grid(tiles, captions, title=title, columns=AUGMENTED_DRAWS + 1), run_files.augmentation_path(run.path))
    result.augmentation = [layer.name for layer in layers]


def first_training_images(run):
    """The first AUGMENTED_IMAGES images of the run's training split, re-made as training made it, with their labels."""
    from cnnlab.data.sources import load_dataset

    config = run.config
    splits = load_dataset(config.data, config.train.validation_split, config.seed, config.train.fold)
    return splits.x_train[:AUGMENTED_IMAGES], splits.y_train[:AUGMENTED_IMAGES]


def augmented(layers, model_inputs, draws, seed):
    """(images, draws, H, W, C): `draws` versions of each preprocessed image through the random layers in training mode.

    All go through as one batch, so each version gets draws of its own, as the images of
    a training batch do. The generators start from `seed` here, whatever state the saved
    model left them in, so drawing again gives the same picture.
    """
    import keras

    for i, variable in enumerate(v for layer in layers for v in keras_compat.random_states(layer)):
        variable.assign(np.array([seed, i], dtype=variable.dtype))
    x = np.repeat(model_inputs, draws, axis=0)
    for layer in layers:
        x = layer(x, training=True)
    return keras.ops.convert_to_numpy(x).reshape(len(model_inputs), draws, *model_inputs.shape[1:])


def to_pixels(model_input, rescale):
    """A model input back to uint8 pixels for display (what the data's rescale undid)."""
    return np.clip(np.round(model_input / rescale), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the layer diagram


def write_architecture(result, model):
    """architecture.png via keras.utils.plot_model where pydot and Graphviz are installed, else architecture.txt."""
    folder = result.folder
    reason = diagram_unavailable()
    if reason is None:
        try:
            draw_diagram(model, folder / run_files.ARCHITECTURE_PNG)
            result.written.append(folder / run_files.ARCHITECTURE_PNG)
            (folder / run_files.ARCHITECTURE_TXT).unlink(missing_ok=True)  # one description of the layers, never two that may differ
            return
        except Exception as exc:  # pydot and Graphviz report failures in types of their own
            reason = f"plot_model failed: {' '.join(str(exc).split()) or type(exc).__name__}"
    path = folder / run_files.ARCHITECTURE_TXT
    note = f"no {run_files.ARCHITECTURE_PNG} ({reason}); wrote {path.name} instead; for the picture: {DIAGRAM_HINT}"
    run_files.write_text(path, architecture_text(model) + f"\n{note}\n")
    (folder / run_files.ARCHITECTURE_PNG).unlink(missing_ok=True)
    result.written.append(path)
    result.notes.append(note)


def diagram_unavailable():
    """Why keras.utils.plot_model cannot draw here, or None when it can."""
    try:
        import pydot  # noqa: F401
    except ImportError:
        return "pydot is not installed"
    if shutil.which("dot") is None:
        return "Graphviz's dot is not on PATH"
    return None


def draw_diagram(model, path):
    """plot_model writes its file itself; it draws into a temporary folder and the picture is then copied in atomically."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        drawn = Path(tmp) / path.name
        keras.utils.plot_model(model, to_file=str(drawn), show_shapes=True, show_layer_names=True, dpi=96)
        run_files.copy_file(drawn, path)


def architecture_text(model):
    """The diagram's information as an aligned table: each layer, its type, output shape, parameters and inputs."""
    columns = (Column("layer"), Column("type"), Column("output shape"), Column("parameters", RIGHT), Column("input from"))
    rows = [(layer.name, type(layer).__name__, format_shape(output_shape(layer)), f"{layer.count_params():,}",
             ", ".join(node.operation.name for node in keras_compat.inbound_layers(layer)) or "-") for layer in model.layers]
    return f"{model.name}: {len(model.layers)} layers, {model.count_params():,} parameters\n\n{format_table(columns, rows)}\n"


# ---------------------------------------------------------------- the offline page


def write_index(result, run):
    """index.html beside the pictures: the run's metrics, its training curves and everything drawn, by relative links."""
    folder = result.folder
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{e(run.path.name)}: visualize</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%;border:1px solid #ddd}"
             "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #eee}"
             "pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>\n</head>\n<body>",
             f"<h1>{e(run.path.name)}</h1>", f"<p>Config <code>{e(run.config.name)}</code>; image: {e(result.sample.description)}.</p>"]
    parts += metrics_section(run.path)
    curves = [name for name in (run_files.LOSS_PLOT, run_files.ACCURACY_PLOT) if (run.path / name).is_file()]
    if curves:
        parts.append("<h2>Training curves</h2>")
        parts += [f"<img src=\"../{e(name)}\" alt=\"{e(name)}\">" for name in curves]
    parts.append("<h2>Architecture</h2>")
    png, txt = folder / run_files.ARCHITECTURE_PNG, folder / run_files.ARCHITECTURE_TXT
    if png in result.written:
        parts.append(f"<img src=\"{e(png.name)}\" alt=\"layer diagram\">")
    elif txt in result.written:
        parts.append(f"<pre>{e(txt.read_text(encoding='utf-8'))}</pre>")
    augmentation = folder / run_files.AUGMENTATION_PNG
    if augmentation in result.written:
        parts.append(f"<h2>Augmentation</h2>\n<img src=\"{e(augmentation.name)}\" alt=\"augmented training images\">")
    for heading, prefix in (("Filters", "filters_"), ("Feature maps", "feature_maps_"), ("Grad-CAM", "grad_cam_")):
        pictures = [path for path in result.written if path.name.startswith(prefix)]
        parts.append(f"<h2>{heading}</h2>")
        parts += [f"<h3>{e(path.stem[len(prefix):])}</h3>\n<img src=\"{e(path.name)}\" alt=\"{e(path.name)}\">" for path in pictures]
        if not pictures:
            parts.append("<p>Nothing to draw.</p>")
    if result.notes:
        parts.append("<h2>Notes</h2>\n<ul>" + "".join(f"<li>{e(note)}</li>" for note in result.notes) + "</ul>")
    parts.append("</body>\n</html>\n")
    path = folder / run_files.VISUALIZE_INDEX
    run_files.write_text(path, "\n".join(parts))
    result.written.append(path)


def metrics_section(run_dir):
    """The run's metrics.json as a small table; nothing where the run has none (or it cannot be read)."""
    try:
        metrics = listing.read_json_object(Path(run_dir) / run_files.METRICS)
    except RunError:
        return []
    rows = [("epochs run", metrics.get("epochs_run")), ("best epoch", metrics.get("best_epoch")),
            ("training time (s)", listing.training_seconds(metrics))]
    for group in ("best", "test"):
        for key, value in sorted((metrics.get(group) or {}).items()):
            rows.append((f"{group} {key}", value))
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(fmt(v))}</td></tr>" for k, v in rows if v is not None)
    return ["<h2>Metrics</h2>", f"<table>{cells}</table>"]


def fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_result(result):
    """What the command prints: the run, the image, notes, and the files written."""
    lines = [f"Run: {result.run_dir}", f"Image: {result.sample.description}"]
    if result.filters:
        lines.append(f"Filters: {', '.join(result.filters)}")
    if result.feature_maps:
        lines.append(f"Feature maps: {', '.join(result.feature_maps)}")
    if result.augmentation:
        lines.append(f"Augmentation: {', '.join(result.augmentation)} ({run_files.AUGMENTATION_PNG}: "
                     f"{AUGMENTED_IMAGES} training images, {AUGMENTED_DRAWS} draws each)")
    if result.grad_cam is not None:
        cam = result.grad_cam
        lines.append(f"Grad-CAM: {cam.layer}, for the predicted class {cam.class_name} ({cam.probability:.2f})")
    lines += [f"Note: {note}" for note in result.notes]
    lines.append(f"Wrote {result.folder}/: {', '.join(path.name for path in result.written)}")
    return "\n".join(lines)
