"""cnnlab: convolutional-network experiments on Keras 3, described in YAML and run from the command line."""

__version__ = "0.1.0"
