"""The commands that describe and run experiments: init, check, train, compare-optimizers, cv, sweep."""

import click

from cnnlab.cli.group import (BackendCommand, config_options, main, mlflow_option, overrides_from, set_option,
                              traceback_printer)
from cnnlab.runtime.uptime import process_seconds


@main.command(cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@set_option
def check(config_path, sets):
    """Validate CONFIG, build its model and print the summary and parameter count; no training."""
    from cnnlab import api

    checked = api.check(config_path, list(sets))
    checked.model.summary(print_fn=lambda line, *args, **kwargs: click.echo(line))
    space = checked.space
    if space is not None:
        click.echo(f"{config_path}: sweep of {len(space.params)} values, {space.trials} trials, {space.sampler} sampler, "
                   f"{space.pruner} pruner, {space.direction} {space.metric}"
                   + (f" over {space.cv_folds} cross-validation folds" if space.cv_folds else ""))
    click.echo(f"{config_path}: OK, {checked.parameters:,} parameters")



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
    from cnnlab import api
    from cnnlab.training.distribute import environment_tf_config, tf_config_for

    overrides = overrides_from(epochs, batch_size, seed, name, sets, mlflow)
    if strategy is not None:
        overrides.append(f"distribution.strategy={strategy}")
    if (workers is None) != (worker_index is None):
        raise click.UsageError("--workers and --worker-index go together")
    if resume_dir is not None and (config_path or overrides):
        raise click.UsageError("--resume continues with the run's own config.yaml; give no CONFIG and no overrides")
    if resume_dir is None and config_path is None:
        raise click.UsageError("missing CONFIG (or --resume RUN_DIR)")
    tf_config = tf_config_for(workers, worker_index) if workers is not None else None
    with environment_tf_config(tf_config):
        result = api.training_result(config_path, overrides, runs_dir, resume=resume_dir, verbose=0 if quiet else 1)
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
    last = m.get("kept") == "last"  # checkpoint.save_best_only false: best.keras is the last epoch's model
    kept = "best.keras is the last epoch's: the checkpoint saves every epoch" if last else f"best {m['best_epoch']}, by {m['monitor']}"
    lines = [f"Run: {result.run_dir}", f"Epochs: {m['epochs_run']} ({kept})"]
    lines += [f"{'Last' if last else 'Best'} {key}: {figure(m, 'best', key, value)}" for key, value in m["best"].items()]
    if m["test"]:
        lines += [f"Test {key}: {figure(m, 'test', key, value)}" for key, value in m["test"].items()]
    final = m.get("final_fit")
    if final:  # train.final_fit: the model evaluate, predict and export use
        lines.append(f"Final fit: final.keras, {final['epochs']} epochs on {final['images']} training + validation images "
                     f"({final['fit_time_s']:.1f} s)")
        lines += [f"Final test {key}: {figure(final, 'test', key, value)}" for key, value in (final["test"] or {}).items()]
    lines.append(f"Training time ({session}, all callbacks): {m['fit_time_s']:.1f} s{speed}")
    return "\n".join([*lines, wall])



def figure(metrics, section, key, value):
    """An accuracy on few images with its count and 95% interval (metrics.json's `intervals`), anything else to 4 decimals."""
    from cnnlab.config.intervals import format_accuracy

    record = (metrics.get("intervals") or {}).get(section, {}).get(key)
    return format_accuracy(value, record["n"], record["correct"]) if record else f"{value:.4f}"



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
    from cnnlab import api
    from cnnlab.search.compare_report import SUMMARY_MD

    result = api.compare_optimizers(config_path, optimizers, repeats=repeats, jobs=jobs, runs_dir=runs_dir, resume=resume_dir,
                                    overrides=overrides_from(epochs, batch_size, seed, name, sets, mlflow), progress=click.echo,
                                    show_traceback=traceback_printer(click.get_current_context()))
    failed = sum(outcome.state != "completed" for outcome in result.outcomes)
    click.echo("\n" + result.table + "\n")
    if failed:
        click.echo(f"{failed} of {len(result.outcomes)} runs failed; their reasons are in the progress lines and {SUMMARY_MD}.")
    click.echo(f"Comparison: {result.compare_dir}")
    api.check_logged(result.compare_dir, "compare")



@main.command(cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--folds", type=int, default=5, show_default=True, help="K: the training pool is split into K stratified folds.")
@config_options
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folds trained at once, each in its own process with an equal share of the CPU threads.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the cross-validation folder.")
@click.option("--resume", "resume_dir", metavar="CV_DIR", type=click.Path(file_okay=False),
              help="Finish the cross-validation in CV_DIR: completed folds are kept, the others are trained again.")
@mlflow_option
def cv(config_path, folds, epochs, batch_size, seed, name, sets, jobs, runs_dir, resume_dir, mlflow):
    """Cross-validate CONFIG: train it once per fold of a stratified K-fold split of its training images.

    The test split, if the config has one, stays out of every fold. Every fold starts from the
    same initial weights and seed and is an ordinary run folder in runs/cv-NAME-TIMESTAMP/;
    its best model predicts its own validation fold, so every training image is scored once.
    Writes summary.md, summary.csv, summary.json (per-fold figures, mean ± std, out-of-fold
    accuracy with its 95% interval and confusion matrix) and confusion_matrix.png.
    """
    from cnnlab import api

    result = api.cv(config_path, folds, overrides=overrides_from(epochs, batch_size, seed, name, sets, mlflow), runs_dir=runs_dir,
                    jobs=jobs, resume=resume_dir, progress=click.echo, show_traceback=traceback_printer(click.get_current_context()))
    click.echo("\n" + result.table + "\n")
    click.echo(f"Cross-validation: {result.cv_dir}")
    api.check_logged(result.cv_dir, "cv")



@main.command("lr-find", cls=BackendCommand)
@click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
@click.option("--start", type=float, default=1e-7, show_default=True, help="First learning rate tried.")
@click.option("--end", type=float, default=10.0, show_default=True, help="Last learning rate tried (if the loss has not exploded before).")
@click.option("--steps", type=click.IntRange(min=5), default=100, show_default=True, help="Batches trained, one rate each.")
@click.option("-o", "--output", metavar="DIR", type=click.Path(file_okay=False),
              help="Folder for lr_find.png and lr_find.json (default: RUNS_DIR/lr-find-NAME).")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False), help="Where the default folder goes.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size.")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed.")
@set_option
def lr_find(config_path, start, end, steps, output, runs_dir, batch_size, seed, sets):
    """Find a learning rate for CONFIG: train its model with a rate growing from --start to --end, one batch each.

    Stops when the smoothed loss explodes, draws loss against rate, and suggests the rate of
    steepest descent of the smoothed loss (fastai's `steep`), with the --set line that uses it.
    The model is thrown away afterwards; no run folder is made.
    """
    from cnnlab import api
    from cnnlab.search.lr_find import format_finding

    finding = api.lr_find(config_path, overrides_from(None, batch_size, seed, None, sets), output=output, runs_dir=runs_dir,
                          start=start, end=end, steps=steps)
    click.echo(format_finding(finding, config_path))


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
    from cnnlab import api

    overrides = overrides_from(epochs, batch_size, seed, name, sets, mlflow)
    if resume_dir is not None:
        if config_path or overrides or params or storage or study_name:
            raise click.UsageError("--resume continues with the sweep's own config, space and study; give only --trials or --jobs")
    elif config_path is None:
        raise click.UsageError("missing CONFIG (or --resume SWEEP_DIR)")
    result = api.sweep(config_path, list(params), trials=trials, overrides=overrides, runs_dir=runs_dir, jobs=jobs,
                       storage=storage, study=study_name, resume=resume_dir, progress=click.echo,
                       show_traceback=traceback_printer(click.get_current_context()))
    click.echo("\n" + result.table + "\n")
    best = result.best
    if best:
        from cnnlab.search.sweep_report import format_value

        click.echo(f"Best: trial {best['number']}, {best['metric']} {format_value(best['metric'], best['value'], best['num_val'])}: "
                   f"{best['run_dir']}")
    click.echo(f"{result.finished} trials finished, {result.failed} failed. Sweep: {result.sweep_dir}")
    api.check_logged(result.sweep_dir, "sweep")



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
    from cnnlab import api
    from cnnlab.config.templates import list_templates

    if show_list:
        rows = list_templates()
        width = max(len(name) for name, _ in rows)
        click.echo("\n".join(f"{name:<{width}}  {description}" for name, description in rows))
        return
    written = api.init(template, path, force=force)
    click.echo(f"Wrote {written}; train it with: cnnlab train {written}")
