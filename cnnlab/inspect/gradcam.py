"""Grad-CAM: where in an image the predicted class looks (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391).

The gradient of the class's score with respect to a conv layer's feature maps, averaged over
each map, weighs that map; the weighted sum, with negative parts cut (ReLU), is upsampled to
the image and scaled to [0, 1]. The score is the class's logit, as in the paper: the last
layer's softmax or sigmoid is set aside while the gradient is taken, since a confident
softmax has gradients near zero everywhere. One helper of `cnnlab visualize` and `cnnlab
evaluate` (the worst mistakes' overlays), not a command of its own; the gradient is taken
on every backend (TensorFlow's tape, jax.grad, torch autograd).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.runtime import backend


@dataclass(frozen=True)
class GradCam:
    heatmap: np.ndarray  # float32 (H, W) in [0, 1], at the input image's size; all zeros where nothing pulls for the class
    layer: str  # the conv layer whose feature maps were weighed
    class_index: int  # the class the map is for: the predicted one unless asked otherwise
    probability: float  # the model's probability for that class
    class_name: str = ""  # filled in by callers that know the run's class names


def last_image_layer(model):
    """The last layer of `model` whose output is a (batch, height, width, channels) image: the default for Grad-CAM,
    since its maps are the most class-specific that still keep where things are."""
    for layer in reversed(model.layers):
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer never called, or shared between several calls
            continue
        if len(shape) == 4 and layer is not model.layers[0]:
            return layer
    return None


def grad_cam(model, model_input, layer_name=None, class_index=None):
    """The Grad-CAM map of one preprocessed image (H, W, C) for `class_index` (default: the predicted class).

    `layer_name` picks the conv layer (default: `last_image_layer`). A layer without an image
    output is a ConfigError naming the layers that have one.
    """
    classes = None if class_index is None else [class_index]
    return grad_cams(model, np.asarray(model_input)[np.newaxis], layer_name, classes)[0]


def grad_cams(model, model_inputs, layer_name=None, class_indices=None):
    """`grad_cam` of each of a batch of preprocessed images, with one forward and one backward pass for them all.

    Each image's score depends on that image alone (inference mode), so the gradient of
    their sum gives each image its own gradient.
    """
    import keras

    layer = choose_layer(model, layer_name)
    inputs = np.asarray(keras.ops.convert_to_numpy(model_inputs), dtype=np.float32)
    probe = keras.Model(model.inputs[0], [layer.output, model.output])
    features, probabilities = (keras.ops.convert_to_numpy(t) for t in probe(inputs, training=False))
    probabilities = two_columns(probabilities)
    chosen = probabilities.argmax(axis=1) if class_indices is None else np.asarray(class_indices, dtype=np.int64)
    try:
        head = keras.Model(layer.output, model.output)
    except ValueError as exc:  # the layers after it also read earlier tensors (a skip connection around it)
        raise ConfigError("--layer", f"{layer.name}: the model's output depends on more than this layer's "
                                     f"output, so Grad-CAM cannot weigh its maps alone; choose a later layer") from exc
    with logits_of(model):
        gradients = class_gradient(head, features, chosen)
    weights = gradients.mean(axis=(1, 2), keepdims=True)  # per image and channel: how much the class gains where it fires
    cams = np.maximum((features * weights).sum(axis=-1), 0)
    return [GradCam(heatmap=upsample(cam, inputs.shape[1:3]), layer=layer.name, class_index=int(c),
                    probability=float(p[c])) for cam, c, p in zip(cams, chosen, probabilities)]


def choose_layer(model, name):
    image_layers = [l for l in model.layers[1:] if len(output_shape(l)) == 4]
    if name is None:
        layer = last_image_layer(model)
        if layer is None:
            raise ConfigError("--layer", "this model has no layer with an image-shaped output (conv, pooling), "
                                         "so there is no map for Grad-CAM to weigh")
        return layer
    if name not in [l.name for l in image_layers]:
        valid = ", ".join(l.name for l in image_layers) or "none"
        raise ConfigError("--layer", f"Grad-CAM needs a layer with an image-shaped output; {name!r} is not one. "
                                     f"Layers with one: {valid}")
    return model.get_layer(name)


def output_shape(layer):
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        return ()


def two_columns(outputs):
    """A single sigmoid unit as the probabilities of its two classes, as everywhere else in cnnlab."""
    outputs = np.asarray(outputs)
    return np.concatenate([1 - outputs, outputs], axis=-1) if outputs.shape[-1] == 1 else outputs


class logits_of:
    """While inside, the model's last layer outputs its logits: its softmax or sigmoid activation is swapped for the
    identity (a public attribute of Dense and Activation layers), and put back on the way out."""

    def __init__(self, model):
        self.layer = model.layers[-1]
        self.saved = getattr(self.layer, "activation", None)

    def __enter__(self):
        import keras

        name = getattr(self.saved, "__name__", "")
        if name in ("softmax", "sigmoid"):
            self.layer.activation = keras.activations.linear
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            self.layer.activation = self.saved
        return False


def class_score(outputs, class_indices):
    """The sum over the batch of each image's class logit; a single sigmoid unit's logit speaks for class 1, so class
    0's score is its negative."""
    import keras

    if outputs.shape[-1] == 1:
        signs = keras.ops.convert_to_tensor(np.where(class_indices == 1, 1.0, -1.0).astype(np.float32))
        return keras.ops.sum(outputs[:, 0] * signs)
    mask = keras.ops.convert_to_tensor(np.eye(outputs.shape[-1], dtype=np.float32)[class_indices])
    return keras.ops.sum(outputs * mask)


def class_gradient(head, features, class_index):
    """d score / d features, as numpy, by the running backend's own automatic differentiation."""
    name = backend.name()
    if name == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(features)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            score = class_score(head(tensor, training=False), class_index)
        return tape.gradient(score, tensor).numpy()
    if name == "jax":
        import jax
        import jax.numpy as jnp

        return np.asarray(jax.grad(lambda f: class_score(head(f, training=False), class_index))(jnp.asarray(features)))
    import torch

    tensor = torch.tensor(features, requires_grad=True)
    class_score(head(tensor, training=False), class_index).backward()
    return tensor.grad.detach().cpu().numpy()


def upsample(cam, size):
    """The map at the image's size (bilinear, as Keras resizes images), scaled so its peak is 1."""
    from PIL import Image

    height, width = size
    resized = np.asarray(Image.fromarray(cam.astype(np.float32)).resize((width, height), Image.BILINEAR))
    peak = float(resized.max())
    return (resized / peak if peak > 0 else np.zeros_like(resized)).astype(np.float32)


def draw_for_visualize(result, model, class_names, layer_name=None):
    """`cnnlab visualize`'s grad_cam_<layer>.png for its sample; without --layer, a model Grad-CAM cannot serve is a
    note rather than an error, since the other pictures are still worth drawing."""
    from cnnlab.rundir import files as run_files
    from cnnlab.tracking import plots

    try:
        cam = grad_cam(model, result.model_input, layer_name)
    except ConfigError as exc:
        if layer_name is not None:
            raise
        result.notes.append(f"no Grad-CAM: {exc.message}")
        return None
    cam = dataclasses.replace(cam, class_name=class_names[cam.class_index])
    title = (f"Grad-CAM of {cam.layer} for {result.sample.label}: predicted {cam.class_name} "
             f"(probability {cam.probability:.2f})")
    path = result.folder / f"grad_cam_{run_files.safe_file_part(cam.layer)}.png"
    run_files.save_figure(plots.plot_grad_cam(result.sample.pixels, cam.heatmap, title), path)
    result.written.append(path)
    result.grad_cam = cam
    return cam


def heatmaps(model, model_inputs):
    """The Grad-CAM map of each input for its predicted class, at the default layer; None where the model has no
    layer to weigh, so that a figure can go without its overlays rather than fail."""
    if not len(model_inputs):
        return None
    try:
        return [cam.heatmap for cam in grad_cams(model, model_inputs)]
    except ConfigError:
        return None
