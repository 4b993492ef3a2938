"""The `cnnlab` group: one `Error:` line for every CnnlabError, the backend chosen before a command runs, and
the options the commands share. The commands themselves parse, call cnnlab.api (what a notebook calls) and print."""

import json

import click

from cnnlab.errors import CnnlabError
from cnnlab.runtime.backend import BACKENDS
from cnnlab.runtime.credentials import redact
from cnnlab.version import __version__


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
        from cnnlab import api

        wanted = ctx.meta.get("backend")
        if ctx.params.get("resume_dir") and self.name == "train":
            wanted = api.resume_backend(ctx.params["resume_dir"], wanted)
        api.start_backend(wanted, show_logs=ctx.find_root().params.get("debug", False))
        return super().invoke(ctx)



class TensorFlowCommand(click.Command):
    """A command whose feature is TensorFlow's own (SavedModel, TensorFlow Lite): it runs on TensorFlow whatever
    $KERAS_BACKEND says, on a run trained on any backend (a .keras file loads on every one)."""

    def invoke(self, ctx):
        from cnnlab import api

        api.start_backend("tensorflow", show_logs=ctx.find_root().params.get("debug", False))
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
    cnnlab cv CONFIG --folds 5                k-fold cross-validation: every training image validated once
    cnnlab lr-find CONFIG                     a learning rate for CONFIG, from a range test
    cnnlab sweep configs/digits_cnn.yaml      search CONFIG's sweep section with Optuna
    cnnlab evaluate runs/RUN                  score a run on its test split, per class
    cnnlab evaluate runs/RUN --split train --worst 16   the training images of highest loss (mislabeled?)
    cnnlab predict photo.png                  classify images with the newest run
    cnnlab export runs/RUN --format tflite    a run's model for phones (TFLite) or servers (SavedModel), checked
    cnnlab visualize runs/RUN bag.png         draw filters, feature maps, Grad-CAM and layers of a run
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
