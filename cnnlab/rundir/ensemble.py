"""Several trained runs of one config shape used as one model: their class probabilities averaged.

An ensemble is named by several run folders, or by one folder whose sub-folders (one or
two levels down, as `cv` folds under `folds/fold-1`) are completed runs: a cross-validation
folder, a sweep's trials of one architecture, or a folder a person gathered runs in. Members
must take the same images the same way (classes, stored image shape, preprocessing), since
one image is given to all of them; the first that does not is named. An Ensemble has the
attributes of a TrainedRun that evaluate, predict and export read (config, class names,
preprocessing, `probabilities`), those of its first member, so they need not tell them apart.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.errors import RunError
from cnnlab.rundir import files as run_files
from cnnlab.rundir.trained import average_probabilities, check_run_dir, load_trained_run

# what members must share: the preprocessing.json keys that decide what a model is given (the background is only a hint)
SHARED_PREPROCESSING = ("image_shape", "color_mode", "image_size", "pad_to", "rescale", "model_input_shape")
SEARCH_DEPTH = 2  # sub-folder levels searched for member runs: <cv>/fold-1 and <cv>/folds/fold-1


@dataclass(frozen=True)
class Ensemble:
    path: Path  # the folder given, or the folder that holds every run given: where evaluate writes eval/
    members: tuple  # TrainedRun, in the order given (sorted within a folder)
    skipped: tuple = ()  # (folder, why) of run folders found but not used: unfinished ones

    @property
    def config(self):
        return self.members[0].config

    @property
    def class_names(self):
        return self.members[0].class_names

    @property
    def preprocessing(self):
        return self.members[0].preprocessing

    @property
    def model_file(self):
        """best.keras, final.keras (train.final_fit), or both named where members differ."""
        return " / ".join(sorted({run.model_file for run in self.members}))

    @property
    def trained_on_val(self):
        return any(run.trained_on_val for run in self.members)

    @property
    def model_description(self):
        if len(self.members) == 1:
            return self.members[0].model_description
        return f"each member's {self.model_file}" + (" (retrained on training + validation)" if self.trained_on_val else "")

    def probabilities(self, inputs, tta=None):
        """Preprocessed inputs → the members' mean probabilities (each averaged over the --tta views first)."""
        return average_probabilities([run.model for run in self.members], len(self.class_names), inputs, tta)

    def record(self):
        """What eval/<split>.json, predict --json and export.json say of the ensemble."""
        return {"members": [str(run.path) for run in self.members], "num_members": len(self.members),
                "combined_by": "mean of the members' class probabilities",
                "skipped": [{"run": str(path), "why": why} for path, why in self.skipped]}


def skipped_warning(ensemble):
    """Runs a folder held but the ensemble leaves out: a fold still training should not go unnoticed."""
    return (f"{ensemble.path}: left out {len(ensemble.skipped)} run folder(s) without a completed {run_files.MODEL}: "
            + "; ".join(f"{path} ({why})" for path, why in ensemble.skipped))


def is_ensemble(run):
    return len(run.members) > 1


def load_runs(paths):
    """A TrainedRun where `paths` name one run, else an Ensemble of every run they name or hold.

    One folder with a best.keras is a run; any other folder is searched for completed run
    folders. A folder with neither gets load_trained_run's own error for a run folder.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise RunError("give at least one run folder")
    unique, skipped = find_members(paths)
    if len(unique) == 1 and not skipped and len(paths) == 1:
        return load_trained_run(unique[0])
    check_enough_members(paths, unique, skipped)
    from cnnlab.runtime.tf_logs import quiet_retracing

    quiet_retracing()  # each member compiles its own predict function on the same images: by design, not a mistake
    members = tuple(load_trained_run(path) for path in unique)
    for run in members[1:]:
        check_same_shape(members[0], run)
    home = paths[0] if len(paths) == 1 else common_folder([run.path for run in members])
    return Ensemble(path=home, members=members, skipped=tuple(skipped))


def find_members(paths):
    """([the completed run folders `paths` name or hold, each once], [(unfinished run folder, why)]); nothing is loaded."""
    found, skipped = [], []
    for path in paths:
        runs, passed = member_folders(path)
        found += runs
        skipped += passed
    first_of = {}
    for path in found:
        first_of.setdefault(path.resolve(), path)  # a run named twice counts once
    return list(first_of.values()), skipped


def check_enough_members(paths, unique, skipped):
    """One line where `paths` hold fewer than two completed runs to make an ensemble of."""
    if len(unique) < 2:
        raise RunError(f"{', '.join(map(str, paths))}: an ensemble needs at least two completed runs; found {len(unique)}"
                       + (f" ({len(skipped)} run folders without a completed {run_files.MODEL} skipped)" if skipped else ""))


def member_folders(path):
    """([run folders to use], [(unfinished run folder, why)]) for one path given on the command line."""
    check_exists(path)
    if (path / run_files.MODEL).is_file():
        return [path], []
    runs = sorted(p for p in sub_folders(path, SEARCH_DEPTH) if run_files.is_run_dir(p))
    if not runs:
        check_run_dir(path)  # not a run folder at all: its own error
        load_trained_run(path)  # a run folder without best.keras: its own error, which says the status
    used, skipped = [], []
    for run in runs:
        status = run_files.read_status(run)
        if status.state == run_files.COMPLETED and (run / run_files.MODEL).is_file():
            used.append(run)
        else:
            skipped.append((run, f"status {status.state}" + (f": {status.reason}" if status.reason else "")))
    return used, skipped


def check_exists(path):
    if not path.exists():
        raise RunError(f"{path}: run folder not found")
    if not path.is_dir():
        raise RunError(f"{path}: is not a folder; expected a run folder made by cnnlab train, or a folder of them")


def sub_folders(path, depth):
    """Folders below `path`, `depth` levels at most; a run folder's own insides (eval/, export/, ...) are not searched."""
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield child
        if depth > 1 and not run_files.is_run_dir(child):
            yield from sub_folders(child, depth - 1)


def check_same_shape(first, run):
    """A member must have the first member's classes and take its images the same way; one line names the odd one."""
    if run.class_names != first.class_names:
        raise RunError(f"{run.path}: has classes {', '.join(run.class_names)} but {first.path} has "
                       f"{', '.join(first.class_names)}; an ensemble's runs must share their classes")
    for key in SHARED_PREPROCESSING:
        mine, theirs = run.preprocessing.get(key), first.preprocessing.get(key)
        if mine != theirs:
            raise RunError(f"{run.path}: its {run_files.PREPROCESSING} {key} is {mine} but {first.path}'s is {theirs}; "
                           "an ensemble's runs must take the same images the same way")


def common_folder(paths):
    """The deepest folder that holds every member's folder: where an ensemble of several RUN_DIRs writes its evaluation."""
    parts = [Path(path).resolve().parts for path in paths]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return Path(*common)


def same_split(members, load):
    """`load(member)` for the first member, checked to be the same images and labels for every other.

    cv folds share their test split but each validates on its own fold, which the other
    members trained on: scoring the ensemble there would score training images.
    """
    held_out = load(members[0])
    for run in members[1:]:
        other = load(run)
        if not (np.array_equal(other.images, held_out.images) and np.array_equal(other.labels, held_out.labels)):
            raise RunError(f"{run.path}: its {held_out.split} split is not {members[0].path}'s, so some members trained on "
                           f"images the other scores; evaluate an ensemble on a split its members share (test), or --data PATH")
    return held_out
