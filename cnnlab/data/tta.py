"""Test-time augmentation (`--tta N`): a fixed list of views of each model input whose probabilities are averaged.

The views are fixed, not drawn at random, so evaluating twice gives the same numbers and an
export can carry them inside: the image itself; its horizontal mirror, where the run's config
flips images horizontally in training; small shifts right, left, down and up (about 1/16 of
the side, at least a pixel, the gap filled by reflecting the image); then the mirror shifted
the same ways. `--tta N` takes the first N.

The mirror is only used where training flipped: such a model was taught that a mirrored
image is the same class, while for digits, letters or anything with a handedness it is not
(a mirrored 7 is no digit), and averaging with it would blur the prediction. Shifts of a
pixel or two are what a convolution and its pooling nearly ignore anyway, so they are safe
for every run. The views act on the preprocessed input, in keras.ops, so evaluate, predict
and an exported model (inside its TensorFlow graph) compute the same numbers.
"""

from dataclasses import dataclass

from cnnlab.errors import DataError

SHIFT_FRACTION = 1 / 16  # of the image's height or width: 1 pixel of 8 to 16, 2 of 28, 14 of 224
FLIP_MODES = ("horizontal", "horizontal_and_vertical")  # RandomFlip modes that mirror left-right; the default is the second


@dataclass(frozen=True)
class View:
    name: str
    flip: bool  # mirror left-right first
    dy: int  # then shift down by dy pixels (up when negative)
    dx: int  # and right by dx pixels (left when negative)


@dataclass(frozen=True)
class TTA:
    views: tuple  # of View, the identity first

    def record(self):
        """What eval/<split>.json, predict --json and export.json say of it."""
        return {"views": len(self.views), "names": [view.name for view in self.views]}

    def describe(self):
        return f"{len(self.views)} views ({', '.join(view.name for view in self.views)})"


def flips_horizontally(config):
    """Whether training mirrored the images: a RandomFlip in model.augmentation or model.layers that flips left-right."""
    specs = tuple(config.model.augmentation) + tuple(config.model.layers)
    return any(spec.type == "RandomFlip" and spec.kwargs.get("mode", "horizontal_and_vertical") in FLIP_MODES
               for spec in specs)


def all_views(input_shape, flip):
    """Every view this module offers for model inputs of `input_shape` (height, width, ...), in the order --tta takes them."""
    height, width = input_shape[0], input_shape[1]
    sy, sx = shift_size(height), shift_size(width)
    shifts = [(f"shift right {sx}px", 0, sx), (f"shift left {sx}px", 0, -sx), (f"shift down {sy}px", sy, 0),
              (f"shift up {sy}px", -sy, 0)]
    shifts = [(name, dy, dx) for name, dy, dx in shifts if dy or dx]
    views = [View("identity", False, 0, 0)]
    if flip:
        views.append(View("horizontal flip", True, 0, 0))
    views += [View(name, False, dy, dx) for name, dy, dx in shifts]
    if flip:
        views += [View(f"horizontal flip, {name}", True, dy, dx) for name, dy, dx in shifts]
    return tuple(views)


def shift_size(side):
    """Pixels to shift a side by; 0 for a side of one pixel, which cannot be reflected."""
    return 0 if side < 2 else min(side - 1, max(1, round(side * SHIFT_FRACTION)))


def make_tta(config, input_shape, n):
    """The first `n` views for a run of `config` whose model inputs are `input_shape`; None for no --tta.

    A bad n is one DataError line that says how many views this run has and why.
    """
    if n is None:
        return None
    flip = flips_horizontally(config)
    views = all_views(input_shape, flip)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(views):
        why = ("identity, horizontal flip, 4 shifts and 4 flipped shifts" if flip else
               "identity and 4 shifts; no horizontal flip, as the config's augmentation does not flip horizontally")
        raise DataError(f"--tta: expected a number of views from 1 to {len(views)} for this run ({why}); received {n!r}")
    return TTA(views[:n])


def apply_view(inputs, view):
    """A batch of model inputs (N, H, W, C) seen through `view`, as a backend tensor."""
    from keras import ops

    x = ops.convert_to_tensor(inputs)
    if view.flip:
        x = ops.flip(x, axis=2)
    if view.dy or view.dx:
        x = shift(x, view.dy, view.dx)
    return x


def shift(x, dy, dx):
    """x moved down by dy and right by dx pixels; what comes in from the edge is the image reflected there."""
    from keras import ops

    height, width = x.shape[1], x.shape[2]
    pads = [[0, 0], [max(dy, 0), max(-dy, 0)], [max(dx, 0), max(-dx, 0)]] + [[0, 0]] * (len(x.shape) - 3)
    padded = ops.pad(x, pads, mode="reflect")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, top:top + height, left:left + width]
