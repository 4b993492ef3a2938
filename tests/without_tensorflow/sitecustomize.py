"""On PYTHONPATH, makes a Python process see no TensorFlow, as on a machine where it is not installed.

tests/test_backends.py starts cnnlab with it to show that JAX and PyTorch need no TensorFlow:
`import tensorflow` fails and importlib.util.find_spec("tensorflow") is None, as when it is absent.
"""

import sys
from importlib.machinery import PathFinder


class PathFinderWithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [PathFinderWithoutTensorFlow if finder is PathFinder else finder for finder in sys.meta_path]
