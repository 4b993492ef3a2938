"""cnnlab: convolutional-network experiments on Keras 3, described in YAML and run from the command line or a notebook.

The Python API (cnnlab/api.py) is imported lazily, so `import cnnlab` and `cnnlab --help` stay instant:
`cnnlab.init`, `cnnlab.check`, `cnnlab.train`, `cnnlab.resume`, `cnnlab.load_run`, `cnnlab.sweep`,
`cnnlab.compare_optimizers`, `cnnlab.cv`, `cnnlab.lr_find`, `cnnlab.Run`.
"""

from cnnlab.version import __version__  # noqa: F401

API = ("Run", "check", "init", "train", "resume", "load_run", "sweep", "compare_optimizers", "cv", "lr_find")


def __getattr__(name):
    if name in API:
        from cnnlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__():
    return [*globals(), *API]
