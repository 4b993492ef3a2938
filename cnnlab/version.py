"""cnnlab's version, in a module of its own so that recording it (env.json, --version) does not import the Python API."""

__version__ = "0.1.0"
