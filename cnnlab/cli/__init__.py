"""The `cnnlab` command: parses arguments, calls the library, turns CnnlabError into one line.

Keras and its backend are imported inside the commands that need them, once
`--backend` is read (Keras takes its backend when first imported), so `cnnlab --help`
answers at once.
"""

from cnnlab.cli.group import main
from cnnlab.cli import experiments, results  # noqa: F401 (each registers its commands on `main`)

__all__ = ["main"]
