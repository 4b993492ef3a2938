"""Config to Keras model: names of Keras classes, the builder, transfer-learning backbones."""
