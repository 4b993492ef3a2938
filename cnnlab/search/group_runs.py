"""What the groups of runs (a comparison, a cross-validation) share: one set of initial weights per seed, each
run an ordinary `train` into the group folder that never raises, and finding a run's folders again for --resume.

Plain data crosses the worker processes (cnnlab/runtime/processes.py): a job's result is a dict.
"""

import re
import tempfile
import warnings
from pathlib import Path

from cnnlab.config.keypaths import first_difference
from cnnlab.model import builder
from cnnlab.runtime import processes as workers
from cnnlab.rundir import files as run_files
from cnnlab.errors import CnnlabError, RunError, TrainingInterrupted, format_traceback, one_line

RUN_INITIAL_WEIGHTS = "initial.weights.h5"  # the copy inside each run folder: what that run started from
COMPLETED, FAILED, INTERRUPTED = run_files.COMPLETED, run_files.FAILED, run_files.INTERRUPTED


def ensure_initial_weights(config, path):
    """Builds the seeded model once and saves its weights; an existing file (on --resume) is kept as it is."""
    if path.exists():
        return
    import keras

    keras.utils.set_random_seed(config.seed)
    model = builder.build_model(config)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "initial.weights.h5"  # Keras insists on the .weights.h5 ending
        model.save_weights(saved)
        run_files.copy_file(saved, path)
def run_dirs_named(compare_dir, run_name):
    """Run folders that `train` made for `run_name` (`<run_name>-YYYYmmdd-HHMMSS[-n]`), oldest first."""
    pattern = re.compile(rf"^{re.escape(run_name)}-(\d{{8}}-\d{{6}})(?:-(\d+))?$")
    found = []
    for path in Path(compare_dir).iterdir():
        match = pattern.match(path.name)
        if match and path.is_dir():
            found.append(((match.group(1), int(match.group(2) or 1)), path))
    return [path for _, path in sorted(found)]
def keep_traceback(path, reason, trace):
    """A failed run's traceback in its folder, where --debug is not there to print it; a full disk loses only this file."""
    try:
        run_files.write_text(path, f"{reason}\n\n{trace}")
    except RunError:
        pass
def plain_result(result):
    """run_job's result, or the same for the Failure the pool hands back where its worker died."""
    if isinstance(result, workers.Failure):
        return {"state": INTERRUPTED if result.interrupted else FAILED, "run_dir": None, "reason": result.reason,
                "traceback": result.traceback}
    return result


def train_in_group(config, group_dir, run_name, initial_weights):
    """Trains `config` into `group_dir` from `initial_weights` and returns {state, run_dir, reason, traceback}; never raises, so one failure cannot stop the others.

    Returns plain data: ConfigError cannot cross a process boundary (it does not unpickle), and
    neither do an exception's frames, so a failure's traceback comes back as text (and is kept
    in the run's failure.txt).
    """
    from cnnlab.training.train import train

    before = set(run_dirs_named(group_dir, run_name))
    run_dir, state, reason, trace = None, COMPLETED, "", ""
    try:
        with warnings.catch_warnings():
            # the initial weights hold no optimizer state, by design: every run starts its optimizer fresh
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            run_dir = train(config, group_dir, verbose=0, initial_weights=initial_weights).run_dir
    except (TrainingInterrupted, KeyboardInterrupt):
        state, reason = INTERRUPTED, "stopped by the user"
    except CnnlabError as exc:
        state, reason, trace = FAILED, one_line(exc), format_traceback(exc)
    except Exception as exc:  # anything Keras raises outside fit (train reports fit's own failures)
        state, reason, trace = FAILED, builder.keras_message(exc), format_traceback(exc)
    if run_dir is None:
        made = [path for path in run_dirs_named(group_dir, run_name) if path not in before]
        run_dir = made[-1] if made else None
    if run_dir is not None:
        status = run_files.read_status(run_dir)
        reason = status.reason or reason if state != COMPLETED else ""
        try:
            run_files.copy_file(initial_weights, run_dir / RUN_INITIAL_WEIGHTS)
        except RunError as exc:
            if state == COMPLETED:
                state, reason, trace = FAILED, one_line(exc), format_traceback(exc)
    if trace:
        keep_traceback(run_dir / run_files.FAILURE_LOG if run_dir else group_dir / f"{run_name}-{run_files.FAILURE_LOG}",
                       reason, trace)
    return {"state": state, "run_dir": None if run_dir is None else str(run_dir), "reason": reason, "traceback": trace}


def check_resumable(group_dir, kind, what, shared, other_difference=None):
    """The stored plan of a compare or cv folder that --resume may finish: one RunError line where it is not one, or
    where its shared settings differ from `shared` (the first difference named; `other_difference`, a setting kept
    beside them such as cv's --folds, named first)."""
    stored = run_files.read_group_plan(group_dir, kind)
    if not isinstance(stored.get("shared"), dict):
        raise RunError(f"{Path(group_dir) / run_files.GROUP_PLANS[kind]}: not a {what} plan (no shared settings); "
                       f"leave out --resume to start a new {what}")
    difference = other_difference(stored) if other_difference is not None else None
    if difference is None:
        path = first_difference(stored["shared"], shared)
        difference = None if path is None else f"{path or 'the whole config'} differs"
    if difference is not None:
        raise RunError(f"--resume {group_dir}: was made with different settings ({difference}); "
                       f"leave out --resume to start a new {what}")
    return stored
