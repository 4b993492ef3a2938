"""The process cnnlab runs in: Keras backend, cores, TensorFlow's logs, Keras internals, worker processes."""
