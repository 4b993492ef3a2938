"""Experiment configs, their key paths and metric names: the schema every other layer reads."""
