"""TensorFlow started without its start-up chatter, so a command shows only cnnlab's output and Keras' progress bar.

TensorFlow's C++ runtime logs while it is imported and while it looks for devices (oneDNN
notices, "Could not find cuda drivers", "Unable to register cuDNN factory", a failed
cuInit), straight to file descriptor 2 and before absl's logging is set up, so
TF_CPP_MIN_LOG_LEVEL does not hold them back. For those few seconds descriptor 2 points
at a temporary file; then every captured line that is not such a log line is written
to stderr after all, and everything is if the start fails. Nothing is redirected once
TensorFlow runs: later errors reach stderr as before. `cnnlab --debug` hides nothing.
"""

import os
import re
import sys
import tempfile
from contextlib import contextmanager

# absl's log line: severity, MMDD hh:mm:ss.micros (before absl is set up the seconds count from 1970), thread,
# file:line]. F (fatal) is left out: it is never chatter. A message's further lines are replayed, as anything else is.
START_UP_LOG_LINE = re.compile(r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] ")
ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def import_tensorflow(show_logs=False):
    """Imports TensorFlow and finds its devices; their log lines are hidden unless `show_logs`."""
    if "tensorflow" in sys.modules:
        return  # started already (tests, or a second command in one process): nothing more will be logged
    if show_logs:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # and the runtime's INFO and WARNING lines while training
    with start_up_logs_hidden():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery logs too: cuInit fails aloud on a machine without a GPU


def quiet_retracing():
    """Drops TensorFlow's "N out of the last N calls to <function ...> triggered tf.function retracing" warning.

    A process that trains run after run (a sweep's trials, a comparison's optimizers) or runs
    several models on the same images (an ensemble's members) compiles functions for each by
    design; from the fifth, TensorFlow takes that for a mistake and says so on stderr. Only
    where TensorFlow is already imported: on other backends there is nothing to quiet.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        logger = tf.get_logger()
        if not_retracing_noise not in logger.filters:
            logger.addFilter(not_retracing_noise)


def not_retracing_noise(record):
    return "triggered tf.function retracing" not in record.getMessage()


def is_start_up_log(line):
    return line.rstrip("\n") == ABSL_NOTICE or START_UP_LOG_LINE.match(line) is not None


@contextmanager
def start_up_logs_hidden():
    """Points file descriptor 2 at a temporary file for the block; replays what was not start-up logging, or all on failure."""
    with stderr_filtered(is_start_up_log, replay_all_on_failure=True):
        yield


@contextmanager
def tflite_logs_hidden(show=False):
    """Hides what TensorFlow Lite's converter and interpreter write to descriptor 2 during the block, unless `show`.

    They write their progress there, whatever TF_CPP_MIN_LOG_LEVEL says ("fully_quantize: 0, ...",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", and on a failed conversion pages
    of MLIR diagnostics). Nothing is replayed, even on failure: a failed conversion's
    diagnostics are in its exception's message, which the caller words as one line.
    """
    if show:
        yield
        return
    with stderr_filtered(lambda line: True, replay_all_on_failure=False):
        yield


@contextmanager
def stderr_filtered(is_hidden, replay_all_on_failure):
    """Points file descriptor 2 at a temporary file for the block, then writes to stderr the captured lines not `is_hidden`."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to redirect: there is nothing to keep quiet either
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            replay_all = failed and replay_all_on_failure
            kept = "".join(line for line in lines if replay_all or not is_hidden(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()
