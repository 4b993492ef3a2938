"""The `cnnlab` command: parses arguments, calls the library, turns CnnlabError into one line.

Keras and its backend are imported inside the commands that need them, once
`--backend` is read (Keras takes its backend when first imported), so `cnnlab --help`
answers at once.
"""

import json
import os
import sys
from pathlib import Path

import click

from cnnlab.version import __version__
from cnnlab.runtime.backend import BACKENDS
from cnnlab.runtime.credentials import redact
from cnnlab.errors import CnnlabError
from cnnlab.runtime.uptime import process_seconds


class CnnlabGroup(click.Group):
    """Turns every CnnlabError into `Error: <one line>` on stderr and its exit code, in one place.

    Under --debug the traceback comes first, with every error the one line was raised from
    (the Keras, TensorFlow or file-system error behind it), then the same line and exit code.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnlabError as exc:
            if ctx.params.get("debug"):
                from cnnlab.errors import format_traceback

                click.echo(redact(format_traceback(exc).rstrip("\n")), err=True)
            click.echo(f"Error: {redact(str(exc))}", err=True)  # a database URL's password, wherever a library put it
            ctx.exit(exc.exit_code)


def traceback_printer(ctx):
    """Where a sweep's or comparison's failed runs print their tracebacks: stderr under --debug, nowhere otherwise
    (they are in each run's failure.txt either way)."""
    if not ctx.find_root().params.get("debug"):
        return None
    return lambda text: click.echo(text.rstrip("\n"), err=True)


class BackendCommand(click.Command):
    """A command that runs a model: its Keras backend is chosen, then started, once the arguments are parsed.

    Here rather than in each command, so that every one of them chooses alike (--backend, else
    $KERAS_BACKEND, else tensorflow; `train --resume` the run's own) and TensorFlow starts
    without its start-up log lines; after parsing, so that --help and usage errors never wait for it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--backend"], type=click.Choice(BACKENDS), expose_value=False,
            callback=lambda ctx, param, value: ctx.meta.__setitem__("backend", value),
            help="Keras backend to run on (default: $KERAS_BACKEND, else tensorflow; train --resume: the run's own)."))

    def invoke(self, ctx):
        from cnnlab.runtime import backend

        wanted = ctx.meta.get("backend")
        if wanted is None and ctx.params.get("resume_dir") and self.name == "train" and not os.environ.get(backend.ENV_VAR):
            from cnnlab.rundir.files import read_backend

            wanted = read_backend(ctx.params["resume_dir"])
        backend.select(wanted)
        backend.start(show_logs=ctx.find_root().params.get("debug", False))
        return super().invoke(ctx)


class TensorFlowCommand(click.Command):
    """A command whose feature is TensorFlow's own (SavedModel, TensorFlow Lite): it runs on TensorFlow whatever
    $KERAS_BACKEND says, on a run trained on any backend (a .keras file loads on every one)."""

    def invoke(self, ctx):
        from cnnlab.runtime import backend

        backend.select("tensorflow")
        backend.start(show_logs=ctx.find_root().params.get("debug", False))
        return super().invoke(ctx)


@click.group(cls=CnnlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnlab")
@click.option("--debug", is_flag=True, help="Show the Python traceback (the library error behind it included) before a one-line "
                                             "error, each failed sweep trial's or comparison run's traceback, and TensorFlow's "
                                             "start-up log lines.")
def main(debug):
    """cnnlab: convolutional-network experiments described in YAML, trained with Keras.

    \b
    cnnlab init digits_cnn                    write a shipped config to edit (--list shows them)
    cnnlab train digits_cnn.yaml              train into a new run folder under runs/
    cnnlab check configs/lenet5.yaml          validate a config, print the model summary
    cnnlab compare-optimizers CONFIG          which optimizer trains CONFIG best, fairly
    cnnlab sweep configs/digits_cnn.yaml      search CONFIG's sweep section with Optuna
    cnnlab evaluate runs/RUN                  score a run on its test split, per class
    cnnlab predict photo.png                  classify images with the newest run
    cnnlab export runs/RUN --format tflite    a run's model for phones (TFLite) or servers (SavedModel), checked
    cnnlab visualize runs/RUN bag.png         draw filters, feature maps and layers of a run
    cnnlab runs                               list the runs, newest first
    cnnlab runs --plot RUN RUN                curves of runs overlaid, with the settings that differ
    cnnlab track runs/RUN --mlflow URI        log a finished run to MLflow
    """


set_option = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Override any config value, e.g. --set train.epochs=3 (repeatable; VALUE is read as YAML).")


def config_options(command):
    """Overrides shared by the commands that train a config; `check` takes only --set, as the others change nothing it prints."""
    options = [
        set_option,
        click.option("--name", help="Run name (default: the config's name)."),
        click.option("--seed", type=click.IntRange(min=0), help="Random seed."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Batch size."),
        click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs."),
    ]
    for option in options:
        command = option(command)
    return command


# --mlflow alone is the local store beside the runs, as `tracking.mlflow: true` in a config
mlflow_option = click.option("--mlflow", metavar="URI", is_flag=False, flag_value="true",
                             help="Log to MLflow (sets tracking.mlflow): a tracking URI such as sqlite:///runs/mlflow.db or "
                                  "http://127.0.0.1:5000; --mlflow alone: RUNS_DIR/mlflow.db. Needs pip install -e \".[mlflow]\".")


def overrides_from(epochs, batch_size, seed, name, sets, mlflow=None):
    """The named flags become `--set` overrides, so one code path validates them all."""
    named = [("train.epochs", epochs), ("train.batch_size", batch_size), ("seed", seed)]
    overrides = [f"{key}={value}" for key, value in named if value is not None]
    if name is not None:
        overrides.append(f"name={name!r}" if name else "name=")
    if mlflow is not None:  # a URI as a JSON string, which YAML reads back unchanged whatever it holds
        overrides.append("tracking.mlflow=true" if mlflow == "true" else f"tracking.mlflow={json.dumps(mlflow)}")
    return overrides + list(sets)


@main.command(cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
def check(config_path, sets):
    """Validate CONFIG, build its model and print the summary and parameter count; no training."""
    from cnnlab.model.builder import count_params, validate
    from cnnlab.config.experiment import errors_naming, load_config

    config = load_config(config_path, list(sets))
    with errors_naming(config_path):
        space = sweep_space(config)
        model = validate(config)
    model.summary(print_fn=lambda line, *args, **kwargs: click.echo(line))
    if space is not None:
        click.echo(f"{config_path}: sweep of {len(space.params)} values, {space.trials} trials, {space.sampler} sampler, "
                   f"{space.pruner} pruner, {space.direction} {space.metric}")
    click.echo(f"{config_path}: OK, {count_params(model):,} parameters")


def sweep_space(config):
    """The config's search space, checked as `cnnlab sweep` checks it; None where the config has no sweep section."""
    if config.raw.get("sweep") is None:
        return None
    from cnnlab.config.schema import to_plain
    from cnnlab.search.space import parse_space

    return parse_space(to_plain(config.raw))


@main.command(cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", required=False, type=click.Path(dir_okay=False))
@config_options
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the run folder.")
@click.option("--resume", "resume_dir", metavar="RUN_DIR", type=click.Path(file_okay=False),
              help="Continue an interrupted run from its last completed epoch, with its own config.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress bar.")
@click.option("--strategy", type=click.Choice(["default", "one_device", "mirrored", "multi_worker"]),
              help="tf.distribute strategy (sets distribution.strategy); multi_worker reads the cluster from TF_CONFIG.")
@click.option("--workers", metavar="HOST:PORT,...", help="multi_worker: every worker's address, the chief first; becomes TF_CONFIG.")
@click.option("--worker-index", type=click.IntRange(min=0), help="multi_worker: this worker's position in --workers (0 is the chief).")
@mlflow_option
def train(config_path, epochs, batch_size, seed, name, sets, runs_dir, resume_dir, quiet, strategy, workers, worker_index, mlflow):
    """Train the experiment in CONFIG into a new run folder under --runs-dir.

    Ctrl-C stops at once and leaves the run resumable: cnnlab train --resume RUN_DIR.
    """
    from cnnlab.config.experiment import errors_naming, load_config
    from cnnlab.training.distribute import environment_tf_config, tf_config_for
    from cnnlab.training.train import resume, train as train_run

    overrides = overrides_from(epochs, batch_size, seed, name, sets, mlflow)
    if strategy is not None:
        overrides.append(f"distribution.strategy={strategy}")
    if (workers is None) != (worker_index is None):
        raise click.UsageError("--workers and --worker-index go together")
    tf_config = tf_config_for(workers, worker_index) if workers is not None else None
    with environment_tf_config(tf_config):
        if resume_dir is not None:
            if config_path or overrides:
                raise click.UsageError("--resume continues with the run's own config.yaml; give no CONFIG and no overrides")
            result = resume(resume_dir, verbose=0 if quiet else 1)
        else:
            if config_path is None:
                raise click.UsageError("missing CONFIG (or --resume RUN_DIR)")
            config = load_config(config_path, overrides)
            with errors_naming(config_path):
                result = train_run(config, runs_dir, verbose=0 if quiet else 1)
    click.echo(format_result(result, process_seconds()))
    if result.tracking_error:  # the run is whole; that it is not in MLflow is still a failure the exit code reports
        from cnnlab.errors import TrackingError
        from cnnlab.tracking.mlflow import failure_message

        raise TrackingError(failure_message(result.run_dir, result.tracking_error, mlflow if mlflow != "true" else None))


def format_result(result, command_seconds):
    """The run's results, then two times: fit's own (every callback included; a resume: this session's) and the
    command's from process start (imports, data, model, fit, test scoring, plots), which a short run's start-up dominates."""
    m = result.metrics
    session = "this session's fit" if m["fit_epochs"] < m["epochs_run"] else "fit"
    speed = f" ({m['images_per_s']:.0f} images/s)" if m["images_per_s"] else ""
    wall = f"Command wall time: {command_seconds:.1f} s"
    if not result.chief:
        return f"Worker done in {m['fit_time_s']:.1f} s of training ({session}, all callbacks); the chief wrote the run folder\n{wall}"
    lines = [f"Run: {result.run_dir}", f"Epochs: {m['epochs_run']} (best {m['best_epoch']}, by {m['monitor']})"]
    lines += [f"Best {key}: {value:.4f}" for key, value in m["best"].items()]
    if m["test"]:
        lines += [f"Test {key}: {value:.4f}" for key, value in m["test"].items()]
    lines.append(f"Training time ({session}, all callbacks): {m['fit_time_s']:.1f} s{speed}")
    return "\n".join([*lines, wall])


@main.command("compare-optimizers", cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("-o", "--optimizer", "optimizers", multiple=True, metavar="SPEC",
              help="An optimizer to compare: NAME or NAME:KEY=VALUE,... such as sgd:learning_rate=0.05,momentum=0.9 "
                   "(repeatable; default: sgd, sgd+momentum, rmsprop, adam, adamw, nadam, adagrad).")
@config_options
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds per optimizer (--seed, --seed + 1, ...); the table shows mean ± std.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trainings at once, each in its own process with an equal share of the CPU threads.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the comparison folder.")
@click.option("--resume", "resume_dir", metavar="COMPARE_DIR", type=click.Path(file_okay=False),
              help="Finish the comparison in COMPARE_DIR: completed runs are kept, the others are trained again.")
@mlflow_option
def compare_optimizers(config_path, optimizers, epochs, batch_size, seed, name, sets, repeats, jobs, runs_dir, resume_dir, mlflow):
    """Train CONFIG once per optimizer from the same initial weights and data order; report which does best.

    Writes runs/compare-NAME-TIMESTAMP/ with one run folder per optimizer and seed,
    summary.csv, summary.md and val_accuracy/val_loss/train_loss plots.
    """
    from cnnlab.search.compare import compare_optimizers as run_comparison
    from cnnlab.search.compare_report import SUMMARY_MD
    from cnnlab.search.optimizer_specs import check_optimizer_specs, parse_optimizer_specs
    from cnnlab.config.experiment import errors_naming, load_config

    config = load_config(config_path, overrides_from(epochs, batch_size, seed, name, sets, mlflow))
    specs = parse_optimizer_specs(optimizers)
    check_optimizer_specs(specs)  # here, so that an error names the --optimizer and not the config file
    with errors_naming(config_path):
        result = run_comparison(config, specs, runs_dir, repeats=repeats, jobs=jobs, resume_dir=resume_dir,
                                progress=click.echo, source=config_path,
                                show_traceback=traceback_printer(click.get_current_context()))
    failed = sum(outcome.state != "completed" for outcome in result.outcomes)
    click.echo("\n" + result.table + "\n")
    if failed:
        click.echo(f"{failed} of {len(result.outcomes)} runs failed; their reasons are in the progress lines and {SUMMARY_MD}.")
    click.echo(f"Comparison: {result.compare_dir}")
    if config.tracking.mlflow is not None:
        from cnnlab.tracking.mlflow import check_group_logged

        check_group_logged(result.compare_dir, "compare")


@main.command(cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", required=False, type=click.Path(dir_okay=False))
@click.option("--param", "params", multiple=True, metavar="PATH=SPACE",
              help="Add or override one entry of the config's sweep.params, e.g. "
                   "--param 'compile.optimizer.learning_rate={float: [1.0e-4, 1.0e-2], log: true}' (repeatable).")
@click.option("--trials", type=click.IntRange(min=1), help="Trials to finish (completed or pruned); default: sweep.trials.")
@config_options
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the sweep folder.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine, each started once with an equal share of the cores, on one study.")
@click.option("--storage", metavar="URL", help="Keep the study in this database (any URL Optuna takes, e.g. "
                                               "postgresql://user@host/db) instead of the sweep folder's study.db; "
                                               "default: $CNNLAB_STORAGE. Its password is never written: give it in "
                                               "$CNNLAB_STORAGE (the full URL), PGPASSWORD or ~/.pgpass.")
@click.option("--study", "study_name", metavar="NAME", help="The study's name in --storage (default: the sweep folder's name); "
                                                            "processes that give the same --storage and --study join one study.")
@click.option("--resume", "resume_dir", metavar="SWEEP_DIR", type=click.Path(file_okay=False),
              help="Continue the sweep in SWEEP_DIR until its trials have finished.")
@mlflow_option
def sweep(config_path, params, trials, epochs, batch_size, seed, name, sets, runs_dir, jobs, storage, study_name, resume_dir, mlflow):
    """Search the values in CONFIG's sweep section with Optuna; every trial is an ordinary run folder.

    Writes runs/sweep-NAME-TIMESTAMP/: study.db, trials/ (one run folder per trial),
    trials.csv, summary.md, best.yaml (cnnlab train best.yaml trains the best trial again)
    and Optuna's plots. Ctrl-C stops after marking the running trial; --resume goes on.
    """
    from cnnlab.config.experiment import errors_naming, load_config
    from cnnlab.search.space import parse_space
    from cnnlab.search.sweep import SWEEP_CONFIG, run_sweep
    from cnnlab.rundir.files import read_group_plan

    overrides = overrides_from(epochs, batch_size, seed, name, sets, mlflow)
    if resume_dir is not None:
        if config_path or overrides or params or storage or study_name:
            raise click.UsageError("--resume continues with the sweep's own config, space and study; give only --trials or --jobs")
        config_path = str(Path(resume_dir) / SWEEP_CONFIG)
        read_group_plan(resume_dir, "sweep")  # a folder that is not a sweep: one line
    elif config_path is None:
        raise click.UsageError("missing CONFIG (or --resume SWEEP_DIR)")
    config = load_config(config_path, overrides)
    with errors_naming(config_path):
        space = parse_space(config_user_dict(config), params, trials=trials)
        result = run_sweep(config, space, runs_dir, storage=storage, study_name=study_name, resume_dir=resume_dir,
                           jobs=jobs, progress=click.echo, show_traceback=traceback_printer(click.get_current_context()))
    click.echo("\n" + result.table + "\n")
    if result.best:
        click.echo(f"Best: trial {result.best['number']}, {space.metric} {result.best['value']:.4f}: {result.best['run_dir']}")
    click.echo(f"{result.finished} trials finished, {result.failed} failed. Sweep: {result.sweep_dir}")
    if config.tracking.mlflow is not None:
        from cnnlab.tracking.mlflow import check_group_logged

        check_group_logged(result.sweep_dir, "sweep")


def config_user_dict(config):
    """The resolved config as plain data, the form the search space is checked against and applied to."""
    from cnnlab.config.schema import to_plain

    return to_plain(config.raw)


@main.command(cls=BackendCommand)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(["test", "val"]),
              help="Held-out split of the run's data to score (default: test, or val where the data has no test split).")
@click.option("--data", "data_path", metavar="PATH", type=click.Path(),
              help="Score every image of another folder or .npz of the kind the run trained on instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the report's numbers and the files written) instead.")
def evaluate(run_dir, split, data_path, as_json):
    """Score RUN_DIR's best model on held-out data: loss, accuracy and a per-class table.

    Writes eval/<split>.json, eval/<split>_confusion_matrix.png and eval/<split>_misclassified.png
    into the run folder (eval/data-<name>.* with --data); nothing train wrote is changed.
    A run that did not complete is scored too, with a warning on stderr.
    """
    import json

    from cnnlab.inspect.evaluate import evaluate_run, evaluation_document, format_report

    if split and data_path:
        raise click.UsageError("give --split or --data, not both: --split picks a split of the run's own data, --data scores all of PATH")
    evaluation = evaluate_run(run_dir, split=split, data_path=data_path, warn=lambda text: click.echo(f"Warning: {text}", err=True))
    if as_json:
        click.echo(json.dumps(evaluation_document(evaluation), indent=2, ensure_ascii=False))
    else:
        click.echo(format_report(evaluation))


@main.command(cls=BackendCommand)
@click.argument("images", metavar="IMAGE [IMAGE|DIR]...", nargs=-1, required=True)
@click.option("--run", "run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False),
              help="Run folder whose best model predicts (default: the newest completed run under --runs-dir).")
@click.option("--model", "model_path", metavar="PATH", type=click.Path(),
              help="Predict with a model cnnlab export wrote instead: a .tflite file or a SavedModel folder, "
                   "with the export.json beside it.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where to find the newest completed run when --run is not given.")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes shown per image.")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Invert the images' brightness; auto inverts a light-background image for a run trained on "
                   "dark-background images (digits, MNIST, Fashion-MNIST) and says so.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=50_000_000, show_default=True,
              help="Refuse larger images, from their header, without decoding them.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per model call.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of one line per image.")
@click.pass_context
def predict(ctx, images, run_dir, model_path, runs_dir, top_k, invert, max_pixels, batch_size, as_json):
    """Print the most probable classes of each IMAGE, or of each image in DIR (PNG, JPEG, BMP, GIF).

    Images are brought to the run's colour mode and stored image size, then preprocessed as in
    training. A bad image gets one line on stderr, the others are still predicted, and the
    exit code is then 2. --model runs a file cnnlab export wrote, on the same uint8 images.
    """
    import json

    from cnnlab.inspect.predict import ImageProblem, choose_run, format_prediction, predict_images, predictions_document

    if model_path is not None and run_dir is not None:
        raise click.UsageError("give --run or --model, not both: an exported model knows the run it came from")
    if model_path is not None:
        from cnnlab.deploy.inference import load_exported

        source = exported = load_exported(model_path)
        path, chosen = exported.run, f"recorded in the export.json of {model_path}"
        header = f"Model: {model_path} ({exported.format}, exported from {exported.run})"
    else:
        from cnnlab.rundir.trained import load_trained_run

        exported = None
        path, chosen = choose_run(run_dir, runs_dir)
        source = load_trained_run(path)
        header = f"Run: {path} ({chosen})"
    if not as_json:
        click.echo(header)
    kept, problems = [], 0
    for item in predict_images(source, images, invert=invert, max_pixels=max_pixels, batch_size=batch_size):
        if isinstance(item, ImageProblem):
            problems += 1
            click.echo(f"Error: {item}", err=True)
        elif not as_json:
            click.echo(format_prediction(item, source.class_names, top_k))
        if as_json:
            kept.append(item)
    if as_json:
        document = predictions_document(path, chosen, kept, source.class_names, top_k, model=exported)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    if problems:
        ctx.exit(2)


@main.command(cls=TensorFlowCommand)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option("-f", "--format", "formats", multiple=True, required=True, metavar="FORMAT",
              help="savedmodel, tflite (float32), tflite-dynamic (dynamic-range quantised), tflite-int8 (full integer), "
                   "or all; repeatable or comma-separated.")
@click.option("-o", "--output", metavar="DIR", type=click.Path(file_okay=False),
              help="Folder that receives the files and export.json (default: RUN_DIR/export).")
@click.pass_context
def export(ctx, run_dir, formats, output):
    """Export RUN_DIR's best model for servers (SavedModel) and phones (TensorFlow Lite), each checked against it.

    Every exported model takes raw uint8 images at the run's stored image size (the run's
    resize, pad and rescale are inside it) and outputs one probability per class. Before a
    file is kept, its predictions on the run's held-out images are compared with best.keras:
    float formats must agree on at least 99.5% of them; quantised ones report their accuracy
    change. export.json records each file's format, size, input, output and check.
    Nothing is written unless every requested format passes. cnnlab predict --model FILE runs them.
    Runs on TensorFlow, whose formats these are, whichever backend trained RUN_DIR.
    """
    from cnnlab.deploy.export import export_run, format_result

    result = export_run(run_dir, formats, output=output, warn=lambda text: click.echo(f"Warning: {text}", err=True),
                        show_logs=ctx.find_root().params.get("debug", False))
    click.echo(format_result(result))


@main.command(cls=BackendCommand)
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.argument("image", metavar="[IMAGE]", required=False, type=click.Path())
@click.option("--layer", metavar="NAME", help="Draw only this layer (conv2d, max_pooling2d_1, ...; see model_summary.txt).")
@click.option("--max-maps", type=click.IntRange(min=1), default=32, show_default=True,
              help="Channels shown per feature-map picture (the first ones).")
@click.option("--html", "html_index", is_flag=True, help="Also write index.html: every picture with the run's metrics and training curves.")
@click.option("--invert", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="Invert IMAGE's brightness, as cnnlab predict does.")
def visualize(run_dir, image, layer, max_maps, html_index, invert):
    """Draw what RUN_DIR's best model learned: its filters, its feature maps for IMAGE, its layers.

    Writes into RUN_DIR/visualize/: filters_<layer>.png for each Conv2D layer,
    feature_maps_<layer>.png for each conv, activation and pooling layer (for IMAGE, or the
    first held-out sample when none is given) and architecture.png (needs pydot and Graphviz:
    pip install 'cnnlab[diagram]'), else architecture.txt.
    """
    from cnnlab.inspect.visualize import format_result, visualize_run

    click.echo(format_result(visualize_run(run_dir, image=image, layer=layer, max_maps=max_maps, html_index=html_index, invert=invert)))


@main.command(cls=BackendCommand)
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--mlflow", metavar="URI", help="Tracking URI to log to (default: the one the run tried, else its config's "
                                                "tracking.mlflow, else RUNS_DIR/mlflow.db beside the run).")
def track(run_dirs, mlflow):
    """Log finished run folders to MLflow, as training does: params, every epoch, test metrics, files and model.

    For runs trained without tracking, or whose tracking server could not be reached: a run
    logged before continues its own MLflow run in the same store, with no epoch logged twice.
    """
    from cnnlab.config.sections import check_tracking_uri
    from cnnlab.tracking.mlflow import track_run

    if mlflow is not None:
        check_tracking_uri(mlflow, "--mlflow")  # the same URIs as tracking.mlflow: it is written into the run's tracking.json
    for run_dir in run_dirs:
        tracker = track_run(run_dir, uri=mlflow)
        done = " (already logged)" if tracker.already_logged else ""
        click.echo(f"{run_dir}: MLflow run {tracker.run_id} in experiment {tracker.experiment!r} at {tracker.uri}{done}")


@main.command()
@click.argument("template", required=False, default="digits_cnn")
@click.argument("path", required=False, type=click.Path())
@click.option("--list", "show_list", is_flag=True, help="List the templates, one line each, and write nothing.")
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
def init(template, path, show_list, force):
    """Write the shipped config TEMPLATE (default digits_cnn) to PATH (default TEMPLATE.yaml), to edit and train.

    \b
    cnnlab init --list                      the templates, one line each
    cnnlab init photos my_photos.yaml       then: cnnlab train my_photos.yaml --set data.path=photos
    """
    from cnnlab.config.templates import list_templates, write_template

    if show_list:
        rows = list_templates()
        width = max(len(name) for name, _ in rows)
        click.echo("\n".join(f"{name:<{width}}  {description}" for name, description in rows))
        return
    written = write_template(template, path, force=force)
    click.echo(f"Wrote {written}; train it with: cnnlab train {written}")


@main.command("runs")
@click.argument("plot_runs", metavar="[RUN]...", nargs=-1)
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False), help="Folder of run folders.")
@click.option("--all", "show_all", is_flag=True, help="Also list the runs inside sweeps (their trials) and comparisons.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the tables.")
@click.option("--plot", is_flag=True, help="Draw the RUNs' curves in one figure, with the settings that differ between them.")
@click.option("-o", "--output", metavar="FILE",
              help="The PNG --plot writes (default: <runs-dir>/runs-plot.png).")
def list_runs(plot_runs, runs_dir, show_all, as_json, plot, output):
    """List the runs under --runs-dir, newest first, with their status and scores, then its sweeps and comparisons.

    Test accuracy is from eval/test.json where the run was evaluated, else from training's
    metrics.json. A sweep's best is its best completed trial by the sweep's metric; a
    comparison's, its best validation accuracy. Folders that are neither are skipped; a
    damaged run is shown as broken.

    With --plot, draws RUN... (run folders, or names as --all lists them, such as
    compare-NAME-TIME/RUN) instead: loss and each metric by epoch, validation solid and
    training dashed, each run's best epoch marked, and the settings that differ.
    """
    import json

    if plot or plot_runs or output is not None:
        return plot_chosen_runs(plot, plot_runs, runs_dir, output, show_all, as_json)

    from cnnlab.rundir.listing import find_groups, find_runs, runs_in_group, summarize_group, summarize_run
    from cnnlab.tracking.tables import format_groups_table, format_runs_table

    rows = [summarize_run(run_dir) for run_dir in find_runs(runs_dir)]
    groups = find_groups(runs_dir)
    if show_all:
        for folder, kind in groups:
            rows += [dict(summarize_run(run_dir), name=f"{folder.name}/{run_dir.name}") for run_dir in runs_in_group(folder, kind)]
    group_rows = [summarize_group(folder, kind) for folder, kind in groups]
    if as_json:
        click.echo(json.dumps({"runs": rows, "sweeps_and_comparisons": group_rows} if group_rows or show_all else rows,
                              indent=2, ensure_ascii=False))
        return
    click.echo(format_runs_table(rows) if rows else f"No runs in {runs_dir}.")
    if group_rows:
        click.echo("\n" + format_groups_table(group_rows))


def plot_chosen_runs(plot, names, runs_dir, output, show_all, as_json):
    """`cnnlab runs --plot RUN...`; the listing's own flags are refused rather than silently ignored."""
    from cnnlab.tracking.runs_plot import format_result, plot_runs

    if not plot:
        raise CnnlabError("RUN and --output are for --plot: cnnlab runs --plot RUN [RUN...] (cnnlab runs alone lists every run)")
    if show_all or as_json:
        raise CnnlabError(f"--plot draws the RUNs it is given, as a figure; leave out {'--all' if show_all else '--json'}")
    if not names:
        raise CnnlabError("--plot needs at least one RUN: a run folder, or a name as cnnlab runs --all lists it")
    click.echo(format_result(plot_runs(names, runs_dir, output=output)))


if __name__ == "__main__":
    sys.exit(main())
