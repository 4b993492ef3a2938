"""Plain Keras `fit` on the backend in KERAS_BACKEND: the model of a cnnlab config, float32 arrays in memory.

The reference side of bench/backends_bench.py: the same model (built from the config by
cnnlab.builder, so the layers and optimizer are identical), images scaled to 0..1 once with
NumPy, `model.fit(x, y, batch_size, validation_data)`, shuffled by Keras. Prints one JSON line:
the seconds of each epoch (train + validation, as cnnlab's history.csv times them).

    KERAS_BACKEND=jax python bench/peers/backend_fit.py CONFIG DATA.npz EPOCHS
"""

import json
import sys
import time

import keras
import numpy as np

from cnnlab.model.builder import build_model, compile_model
from cnnlab.config.experiment import load_config, with_train_values


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.started)


def main():
    config_path, data_path, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = with_train_values(load_config(config_path), batch_parts=1, steps_per_execution=1)
    keras.utils.set_random_seed(config.seed)
    with np.load(data_path) as data:
        x_train, y_train = data["x_train"].astype("float32") / 255, data["y_train"]
        x_val, y_val = data["x_val"].astype("float32") / 255, data["y_val"]
    model = compile_model(build_model(config), config)
    timer = EpochTimes()
    timer.times = []
    history = model.fit(x_train[..., None], y_train, batch_size=config.train.batch_size, epochs=epochs,
                        validation_data=(x_val[..., None], y_val), callbacks=[timer], verbose=0)
    print(json.dumps({"epoch_s": timer.times, "val_accuracy": history.history["val_accuracy"][-1]}))


if __name__ == "__main__":
    main()
