"""`python -m cnnlab.cli`: the `cnnlab` command, for tests and scripts that run it with a given interpreter."""

import sys

from cnnlab.cli import main

sys.exit(main())
