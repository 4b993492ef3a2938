"""The `cnnlab` command: parses arguments, calls the library, turns CnnlabError into one line.

TensorFlow is imported inside the commands that need it, so `cnnlab --help`
answers at once.
"""

import os
import sys

import click

from cnnlab import __version__
from cnnlab.errors import CnnlabError


class CnnlabGroup(click.Group):
    """Turns every CnnlabError into `Error: <one line>` on stderr and its exit code, in one place."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CnnlabError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=CnnlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnlab")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
def main(debug):
    """cnnlab: convolutional-network experiments described in YAML, trained with Keras.

    \b
    cnnlab train configs/digits_cnn.yaml      train into a new run folder under runs/
    cnnlab check configs/lenet5.yaml          validate a config, print the model summary
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal


def config_options(command):
    """Overrides shared by every command that reads a config."""
    options = [
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="Override any config value, e.g. --set train.epochs=3 (repeatable; VALUE is read as YAML)."),
        click.option("--name", help="Run name (default: the config's name)."),
        click.option("--seed", type=click.IntRange(min=0), help="Random seed."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Batch size."),
        click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs."),
    ]
    for option in options:
        command = option(command)
    return command


def overrides_from(epochs, batch_size, seed, name, sets):
    """The named flags become `--set` overrides, so one code path validates them all."""
    named = [("train.epochs", epochs), ("train.batch_size", batch_size), ("seed", seed)]
    overrides = [f"{key}={value}" for key, value in named if value is not None]
    if name is not None:
        overrides.append(f"name={name!r}" if name else "name=")
    return overrides + list(sets)


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@config_options
def check(config_path, epochs, batch_size, seed, name, sets):
    """Validate CONFIG, build its model and print the summary and parameter count; no training."""
    from cnnlab.builder import count_params, validate
    from cnnlab.config import errors_naming, load_config

    config = load_config(config_path, overrides_from(epochs, batch_size, seed, name, sets))
    with errors_naming(config_path):
        model = validate(config)
    model.summary(print_fn=lambda line, *args, **kwargs: click.echo(line))
    click.echo(f"{config_path}: OK, {count_params(model):,} parameters")


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@config_options
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the run folder.")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress bar.")
def train(config_path, epochs, batch_size, seed, name, sets, runs_dir, quiet):
    """Train the experiment in CONFIG into a new run folder under --runs-dir."""
    from cnnlab.config import errors_naming, load_config
    from cnnlab.train import train as train_run

    config = load_config(config_path, overrides_from(epochs, batch_size, seed, name, sets))
    with errors_naming(config_path):
        result = train_run(config, runs_dir, verbose=0 if quiet else 1)
    click.echo(format_result(result))


def format_result(result):
    m = result.metrics
    lines = [f"Run: {result.run_dir}", f"Epochs: {m['epochs_run']} (best {m['best_epoch']}, by {m['monitor']})"]
    lines += [f"Best {key}: {value:.4f}" for key, value in m["best"].items()]
    if m["test"]:
        lines += [f"Test {key}: {value:.4f}" for key, value in m["test"].items()]
    lines.append(f"Wall time: {m['wall_time_s']:.1f} s ({m['images_per_s']:.0f} images/s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
