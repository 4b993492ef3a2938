"""Training a config into a run folder: the loop (TensorFlow) or Keras fit, callbacks, fine-tuning, distribution."""
