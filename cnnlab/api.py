"""cnnlab from Python: what a notebook calls, and what the `cnnlab` command is a thin shell over.

    import cnnlab
    run = cnnlab.train("digits.yaml", overrides={"train.epochs": 3})
    run.metrics["best"], run.history["val_loss"]
    run.plot()                      # the curves, inline in a notebook
    run.evaluate()["accuracy"]
    run.predict(["photo.png"])[0]["top"]
    run.export(["tflite"])

Each call does what the command of the same name does, with the same checks and the same
run folder: a run trained here opens with `cnnlab evaluate`, and one trained by the command
opens here with `cnnlab.load_run(path)`. Errors are the same `CnnlabError`s the command
prints as one line. Keras' backend is chosen at the first call (`backend=`, else
$KERAS_BACKEND, else TensorFlow) and stays for the life of the process, as Keras requires.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError

__all__ = ["Run", "check", "init", "train", "resume", "load_run", "sweep", "compare_optimizers", "cv", "lr_find"]


def start_backend(name=None, show_logs=False):
    """Chooses Keras' backend once per process and imports Keras on it: every command, and every call here, starts so.

    `name` None keeps the one already running, else takes $KERAS_BACKEND, else TensorFlow;
    TensorFlow's start-up log lines are hidden unless `show_logs` (--debug).
    """
    from cnnlab.runtime import backend

    backend.select(name)
    backend.start(show_logs=show_logs)


def resume_backend(run_dir, wanted=None):
    """The backend a resumed run continues on: `wanted`, else $KERAS_BACKEND, else the one it was trained on."""
    import os

    from cnnlab.runtime import backend

    if wanted is not None or os.environ.get(backend.ENV_VAR):
        return wanted
    from cnnlab.rundir.files import read_backend

    return read_backend(run_dir)


def as_overrides(overrides):
    """{"train.epochs": 3} as the `--set` overrides the config loader takes; each value as JSON, which YAML reads back unchanged."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return [f"{path}={json.dumps(value)}" for path, value in overrides.items()]
    return list(overrides)  # already "path=value" strings, as --set writes them


def load_experiment(config, overrides=None):
    """A config file's path, or the same config as a dict, validated as `cnnlab check` validates it."""
    from cnnlab.config.experiment import config_from_text, load_config

    if isinstance(config, dict):
        import yaml

        return config_from_text(yaml.safe_dump(config, sort_keys=False), as_overrides(overrides))
    return load_config(config, as_overrides(overrides))


def naming(config):
    """Errors found after loading (by the builder, the trainer) name the config file they came from, if there is one."""
    from contextlib import nullcontext

    from cnnlab.config.experiment import errors_naming

    return nullcontext() if isinstance(config, dict) else errors_naming(config)


@dataclass(frozen=True)
class Checked:
    """What `cnnlab check` prints: the built model, its parameter count, and the sweep space if the config has one."""

    model: object
    parameters: int
    space: object  # search.space.Space, or None


def check(config, overrides=None, backend=None):
    """Validates `config` and builds its model, training nothing; a ConfigError names the first mistake."""
    start_backend(backend)
    from cnnlab.config.schema import to_plain
    from cnnlab.model.builder import count_params, validate

    experiment = load_experiment(config, overrides)
    with naming(config):
        space = None
        if experiment.raw.get("sweep") is not None:
            from cnnlab.search.space import parse_space

            space = parse_space(to_plain(experiment.raw))
        model = validate(experiment)
    return Checked(model=model, parameters=count_params(model), space=space)


@dataclass(frozen=True)
class Run:
    """A run folder, as training left it: its numbers, its curves and the model to use; or an ensemble of runs.

    An ensemble (`load_run` of several runs, or of a folder of them such as a cv folder) is one
    model, the mean of its members' probabilities, to evaluate, predict with and export as
    `cnnlab evaluate RUN...` does; its numbers and curves are its members' own (`members`).
    """

    path: Path  # the run folder; for an ensemble, the folder given (or the one holding every member given)
    members: tuple = ()  # an ensemble's run folders; empty for one run

    @property
    def model_source(self):
        """What evaluate, predict and export are given: the run folder, or every member's."""
        return list(self.members) if self.members else self.path

    def single(self, what):
        if self.members:
            raise CnnlabError(f"{self.path}: an ensemble of {len(self.members)} runs has no {what} of its own; "
                              f"each member has: [cnnlab.load_run(path) for path in run.members]")

    @property
    def metrics(self):
        """metrics.json: best and test figures, epochs, timings."""
        from cnnlab.rundir import files as run_files

        self.single("metrics.json")
        return run_files.read_json(self.path / run_files.METRICS)

    @property
    def history(self):
        """history.csv as {column: [one value per epoch]}: epoch, loss, val_loss, each metric."""
        from cnnlab.rundir import files as run_files

        self.single("history.csv")
        return run_files.read_history(self.path / run_files.HISTORY)

    @property
    def status(self):
        """'completed', 'running', 'interrupted', 'failed', …, from the run's status.json; an ensemble's members all completed."""
        from cnnlab.rundir import files as run_files

        return run_files.COMPLETED if self.members else run_files.read_status(self.path).state

    def plot(self, metric=None):
        """Loss (or `metric`) per epoch, training and validation, best epoch marked; a matplotlib Figure a notebook shows."""
        from cnnlab.tracking.plots import plot_history

        history = self.history
        metric = metric or "loss"
        if metric not in history:
            raise CnnlabError(f"{self.path}: no {metric!r} in history.csv; it has {', '.join(k for k in history if k != 'epoch')}")
        return plot_history(history, metric, self.metrics.get("best_epoch"), title=f"{self.path.name}: {metric}")

    def evaluate(self, split=None, data=None, tta=None):
        """Scores the run's best model as `cnnlab evaluate` does; returns the report (eval/<split>.json's numbers).

        `tta`: the number of test-time augmentation views averaged, as `--tta N`.
        """
        start_backend()
        from cnnlab.inspect.evaluate import evaluate_run, evaluation_document

        return evaluation_document(evaluate_run(self.model_source, split=split, data_path=data, tta=tta))

    def predict(self, images, top_k=3, invert="auto", tta=None):
        """Class probabilities of image files (or folders of them): one dict per image, as `predict --json` prints.

        A file that cannot be read raises, naming it: a notebook wants to know at once.
        """
        start_backend()
        from cnnlab.inspect.predict import ImageProblem, prediction_tta, predict_images, predictions_document
        from cnnlab.rundir.ensemble import load_runs

        images = [images] if isinstance(images, (str, Path)) else list(images)
        run = load_runs(self.model_source)
        items = list(predict_images(run, [str(image) for image in images], invert=invert, tta=prediction_tta(run, tta)))
        problems = [item for item in items if isinstance(item, ImageProblem)]
        if problems:
            raise CnnlabError(str(problems[0]) + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return predictions_document(self.path, "given", items, run.class_names, top_k)["predictions"]

    def export(self, formats=("savedmodel", "tflite"), output=None):
        """Exports the best model as `cnnlab export` does (each file checked against it); returns export.json's record.

        SavedModel and TensorFlow Lite are TensorFlow's formats: in a process on another backend this raises.
        """
        start_backend()
        from cnnlab.deploy.export import export_run
        from cnnlab.runtime import backend

        if not backend.is_tensorflow():
            raise CnnlabError(f"export runs on TensorFlow and this process runs Keras on {backend.name()}; "
                              f"use cnnlab export {self.path} (a new process) instead")
        result = export_run(self.model_source, [formats] if isinstance(formats, str) else list(formats), output=output)
        from cnnlab.rundir import files as run_files

        return run_files.read_json(result.folder / run_files.EXPORT_RECORD)

    def __repr__(self):
        if self.members:
            return f"Run({str(self.path)!r}, ensemble of {len(self.members)} runs)"
        return f"Run({str(self.path)!r}, status={self.status!r})"


def init(template="digits_cnn", path=None, force=False):
    """Writes a shipped config (`cnnlab init --list` names them) to `path`, default `<template>.yaml`; returns the path."""
    from cnnlab.config.templates import write_template

    return write_template(template, path, force=force)


def load_run(path, *more):
    """A run folder cnnlab trained (by the command or here), to look at, evaluate, predict with or export.

    Several run folders, or one folder of them (a cv folder, a sweep's trials), open as one
    ensemble: its completed runs, found as `cnnlab evaluate RUN...` finds them.
    """
    from cnnlab.rundir import files as run_files
    from cnnlab.rundir.ensemble import check_enough_members, common_folder, find_members
    from cnnlab.rundir.trained import check_run_dir

    paths = [Path(p) for p in (path, *more)]
    if len(paths) == 1 and run_files.is_run_dir(paths[0]):
        check_run_dir(paths[0])
        return Run(paths[0])
    members, skipped = find_members(paths)  # as evaluate finds them, without loading a model
    check_enough_members(paths, members, skipped)
    return Run(paths[0] if len(paths) == 1 else common_folder(members), members=tuple(members))


def train(config, overrides=None, runs_dir="runs", backend=None, verbose=1):
    """Trains `config` (a YAML file's path, or the config as a dict) into a new run folder under `runs_dir`.

    `overrides` sets config values by path, as `--set` does: {"train.epochs": 3, "seed": 43}.
    `verbose=0` hides Keras' progress bar.
    """
    return Run(Path(training_result(config, overrides, runs_dir, backend=backend, verbose=verbose).run_dir))


def resume(run_dir, backend=None, verbose=1):
    """Continues an interrupted run in its own folder, with its own config, from its last completed epoch."""
    return Run(Path(training_result(resume=run_dir, backend=backend, verbose=verbose).run_dir))


def training_result(config=None, overrides=None, runs_dir="runs", resume=None, backend=None, verbose=1):
    """`train` or `resume` with everything `cnnlab train` prints: the run folder, metrics.json's numbers, whether
    this process was the chief of a multi-worker run, and an MLflow failure that left the run whole."""
    from cnnlab.training.train import resume as resume_run, train as train_config

    if resume is not None:
        start_backend(resume_backend(resume, backend))
        return resume_run(resume, verbose=verbose)
    start_backend(backend)
    experiment = load_experiment(config, overrides)
    with naming(config):
        return train_config(experiment, runs_dir, verbose=verbose)


def sweep(config=None, params=None, trials=None, overrides=None, runs_dir="runs", jobs=1, storage=None, study=None,
          backend=None, resume=None, progress=None, show_traceback=None):
    """Runs `cnnlab sweep`: searches the config's sweep section (plus `params`, {path: space}) with Optuna.

    `resume` (a sweep folder) continues that sweep with its own config and space instead.
    `progress` receives the progress lines the command prints; `show_traceback` each failed trial's traceback.
    Returns the sweep's result: `sweep_dir`, `best` (its number, metric, value and run folder), `table`.
    """
    start_backend(backend)
    from cnnlab.search.space import parse_space
    from cnnlab.search.sweep import SWEEP_CONFIG, run_sweep

    if resume is not None:
        from cnnlab.rundir.files import read_group_plan

        read_group_plan(resume, "sweep")  # a folder that is not a sweep: one line
        config = str(Path(resume) / SWEEP_CONFIG)
    experiment = load_experiment(config, overrides)
    if isinstance(params, dict):
        params = [f"{path}={json.dumps(space)}" for path, space in params.items()]
    with naming(config):
        space = parse_space(plain(experiment), params or (), trials=trials)
        return run_sweep(experiment, space, runs_dir, storage=storage, study_name=study, resume_dir=resume, jobs=jobs,
                         progress=progress, show_traceback=show_traceback)


def compare_optimizers(config, optimizers=(), repeats=1, overrides=None, runs_dir="runs", jobs=1, backend=None,
                       resume=None, progress=None, show_traceback=None):
    """Runs `cnnlab compare-optimizers`: the config once per optimizer spec ("adam", "sgd:learning_rate=0.05"), fairly.

    `resume` (a comparison folder) finishes it: completed runs are kept. `progress` receives the progress lines.
    Returns the comparison: `compare_dir`, `outcomes` (one per optimizer and seed), `table`.
    """
    start_backend(backend)
    from cnnlab.search.compare import compare_optimizers as run_comparison
    from cnnlab.search.optimizer_specs import check_optimizer_specs, parse_optimizer_specs

    experiment = load_experiment(config, overrides)
    specs = parse_optimizer_specs(list(optimizers))
    check_optimizer_specs(specs)  # before the config's name is added: an error here names the --optimizer
    with naming(config):
        return run_comparison(experiment, specs, runs_dir, repeats=repeats, jobs=jobs, resume_dir=resume,
                              progress=progress, source=None if isinstance(config, dict) else str(config),
                              show_traceback=show_traceback)


def cv(config, folds=5, overrides=None, runs_dir="runs", jobs=1, backend=None, resume=None, progress=None,
       show_traceback=None):
    """Runs `cnnlab cv`: stratified `folds`-fold cross-validation of the config's training images, each fold a run.

    `resume` (a cross-validation folder made with this config and `folds`) finishes it: completed folds are kept.
    Returns `cv_dir`, `folds` (one row per fold), `summary` (summary.json: mean ± std, out-of-fold accuracy
    with its 95% interval, confusion matrix) and `table`.
    """
    start_backend(backend)
    from cnnlab.search.cv import check_folds, cross_validate

    check_folds(folds)
    experiment = load_experiment(config, overrides)
    with naming(config):
        return cross_validate(experiment, folds, runs_dir, jobs=jobs, resume_dir=resume, progress=progress,
                              source=None if isinstance(config, dict) else str(config), show_traceback=show_traceback)


def lr_find(config, overrides=None, output=None, runs_dir="runs", start=1e-7, end=10.0, steps=100, backend=None):
    """Runs `cnnlab lr-find`: a learning-rate range test on the config's model and data, nothing trained kept.

    Writes lr_find.png and lr_find.json to `output` (default RUNS_DIR/lr-find-NAME); returns the finding,
    whose `suggested` rate is where the smoothed loss falls fastest.
    """
    start_backend(backend)
    from cnnlab.search.lr_find import check_range, lr_find as find

    check_range(start, end, steps)
    experiment = load_experiment(config, overrides)
    with naming(config):
        return find(experiment, output or Path(runs_dir) / f"lr-find-{experiment.name}", start=start, end=end, steps=steps)


def check_logged(group_dir, kind):
    """After a sweep or comparison logged to MLflow: a TrackingError naming the runs it could not log (all are whole)."""
    from cnnlab.tracking.mlflow import check_group_logged

    check_group_logged(group_dir, kind)


def plain(experiment):
    """The resolved config as plain data, the form a search space is checked against and applied to."""
    from cnnlab.config.schema import to_plain

    return to_plain(experiment.raw)
