"""uint8 images in memory as batches of model inputs: a `tf.data` pipeline under TensorFlow, a `keras.utils.PyDataset`
on JAX and PyTorch.

Each batch is gathered from the arrays and preprocessed by `preprocess.preprocess_images`,
the function TensorFlow's loop and pipeline use too. Shuffling is a NumPy permutation
drawn from (seed, epoch) alone: the same seed gives the same orders on every run, any
epoch's order can be made again without the ones before it (a resumed run), and Keras
peeking at a batch before training changes nothing.
"""

import math

import keras
import numpy as np

from cnnlab.data.preprocessing import preprocess_images


def epoch_order(size, seed, epoch):
    """The order of the images in epoch `epoch` (0-based) of a run seeded with `seed`."""
    return np.random.default_rng([seed, epoch]).permutation(size)


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (model input, label); with `seed`, epoch `epoch` visits the images in `epoch_order`, else in their order.

    The training loop sets `epoch` when an epoch begins (`EpochOrder`), so the order follows
    the epoch's number, whichever epoch a resumed run starts at. `multiple_of` > 1 (data
    parallelism over that many devices) leaves out the last few images of an epoch that
    would make its last batch indivisible among the devices: fewer than `multiple_of`.
    """

    def __init__(self, x, y, prep, batch_size, seed=None, multiple_of=1, mix=None):
        super().__init__()
        self.x, self.y, self.prep, self.batch_size, self.seed = x, y, prep, batch_size, seed
        self.mix = mix  # (images, labels) → (images, soft labels): MixUp and CutMix on training batches (model/mixing.py)
        self.usable = len(x) - len(x) % batch_size % multiple_of
        self.epoch = 0
        self._order = (None, None)  # (epoch, its order): one permutation per epoch, not one per batch

    @property
    def num_batches(self):
        return math.ceil(self.usable / self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        start = index * self.batch_size
        stop = min(start + self.batch_size, self.usable)
        chosen = slice(start, stop) if self.seed is None else self.order()[start:stop]
        images, labels = preprocess_images(self.x[chosen], self.prep), self.y[chosen]
        if self.mix is None:
            return images, labels
        return tuple(keras.ops.convert_to_numpy(part) for part in self.mix(images, labels))

    def order(self):
        if self._order[0] != self.epoch:
            self._order = (self.epoch, epoch_order(len(self.x), self.seed, self.epoch))
        return self._order[1]


class EpochOrder(keras.callbacks.Callback):
    """Tells a shuffled `ArrayBatches` which epoch begins, before `fit` reads its first batch."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.epoch = epoch


def make_dataset(x, y, prep, batch_size, shuffle=False, seed=None):
    """Batches of (model input, label) from uint8 arrays: `tf.data` under TensorFlow, a `PyDataset` on JAX and PyTorch.

    Both shuffle by the seed, afresh each epoch, each in its own way (tf.data's buffer
    shuffle, a NumPy permutation per epoch), so a backend's runs are reproducible and a
    resumed run sees the orders of the uninterrupted one.
    """
    from cnnlab.runtime import backend

    if backend.is_tensorflow():
        return make_tf_dataset(x, y, prep, batch_size, shuffle, seed)
    return ArrayBatches(x, y, prep, batch_size, seed=seed if shuffle else None)


def make_tf_dataset(x, y, prep, batch_size, shuffle=False, seed=None):
    """A batched, prefetched `tf.data.Dataset` of (model input, label) from uint8 arrays."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda images, labels: (preprocess_images(images, prep), labels), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
