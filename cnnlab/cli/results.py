"""The commands that use what training left: evaluate, predict, export, visualize, track, runs."""

import click

from cnnlab.cli.group import BackendCommand, TensorFlowCommand, main
from cnnlab.errors import CnnlabError


TTA_HELP = ("Average the probabilities of N fixed views of each image: itself, its mirror (where the config's "
            "augmentation flips horizontally), then small shifts; recorded in the output.")


@main.command(cls=BackendCommand)
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--split", type=click.Choice(["test", "val", "train"]),
              help="Split of the run's data to score (default: test, or val where the data has no test split); "
                   "train, with --worst, finds images that may be mislabeled.")
@click.option("--data", "data_path", metavar="PATH", type=click.Path(),
              help="Score every image of another folder or .npz of the kind the run trained on instead.")
@click.option("--worst", type=click.IntRange(min=1), metavar="N",
              help="Also list the N images of highest loss (file or index, label, prediction, loss) and draw them "
                   "in eval/<split>_highest_loss.png.")
@click.option("--tta", type=click.IntRange(min=1), metavar="N", help=TTA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (the report's numbers and the files written) instead.")
def evaluate(run_dirs, split, data_path, worst, tta, as_json):
    """Score RUN_DIR's best model on held-out data: loss, accuracy and a per-class table.

    Several RUN_DIRs, or one folder of runs (a cv folder), are scored as one model, the mean
    of their probabilities, on a split they share (test), or --data; its files go to that
    folder's eval/ (the runs' common folder for several RUN_DIRs).

    Writes eval/<split>.json, eval/<split>_confusion_matrix.png and eval/<split>_misclassified.png
    into the run folder (eval/data-<name>.* with --data); nothing train wrote is changed.
    --split train --worst N ranks the training images by their loss: a mislabeled image is
    among the first, since the model learned its class from the others.
    A run that did not complete is scored too, with a warning on stderr.
    """
    import json

    from cnnlab.inspect.evaluate import evaluate_run, evaluation_document, format_report

    if split and data_path:
        raise click.UsageError("give --split or --data, not both: --split picks a split of the run's own data, --data scores all of PATH")
    evaluation = evaluate_run(list(run_dirs), split=split, data_path=data_path, worst=worst, tta=tta,
                              warn=lambda text: click.echo(f"Warning: {text}", err=True))
    if as_json:
        click.echo(json.dumps(evaluation_document(evaluation), indent=2, ensure_ascii=False))
    else:
        click.echo(format_report(evaluation))



@main.command(cls=BackendCommand)
@click.argument("images", metavar="IMAGE [IMAGE|DIR]...", nargs=-1, required=True)
@click.option("--run", "run_dir", metavar="RUN_DIR", multiple=True, type=click.Path(file_okay=False),
              help="Run folder whose best model predicts (default: the newest completed run under --runs-dir); "
                   "repeated, or a folder of runs (a cv folder): the mean of their probabilities.")
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
@click.option("--tta", type=click.IntRange(min=1), metavar="N", help=TTA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of one line per image.")
@click.pass_context
def predict(ctx, images, run_dir, model_path, runs_dir, top_k, invert, max_pixels, batch_size, tta, as_json):
    """Print the most probable classes of each IMAGE, or of each image in DIR (PNG, JPEG, BMP, GIF).

    Images are brought to the run's colour mode and stored image size, then preprocessed as in
    training. A bad image gets one line on stderr, the others are still predicted, and the
    exit code is then 2. --model runs a file cnnlab export wrote, on the same uint8 images.
    """
    import json

    from cnnlab.inspect.predict import (ImageProblem, choose_run, format_prediction, prediction_tta, predict_images,
                                        predictions_document)

    if model_path is not None and run_dir:
        raise click.UsageError("give --run or --model, not both: an exported model knows the run it came from")
    if model_path is not None:
        from cnnlab.deploy.inference import load_exported

        source = exported = load_exported(model_path)
        path, chosen = exported.run, f"recorded in the export.json of {model_path}"
        header = f"Model: {model_path} ({exported.format}, exported from {exported.run})"
    else:
        from cnnlab.rundir.ensemble import is_ensemble, load_runs, skipped_warning

        exported = None
        path, chosen = choose_run(run_dir, runs_dir)
        source = load_runs(path)
        path = source.path
        header = f"Run: {path} ({chosen})"
        if is_ensemble(source):
            header += f"\nEnsemble: the mean of {len(source.members)} runs' probabilities"
            if source.skipped:
                click.echo(f"Warning: {skipped_warning(source)}", err=True)
        elif source.trained_on_val:
            header += f"\nModel: {source.model_description}"
    views = prediction_tta(source, tta)
    if views is not None:
        header += f"\nTTA: {views.describe()}"
    elif exported is not None and exported.tta:
        header += f"\nTTA: {exported.tta['views']} views, inside the exported model"
    if not as_json:
        click.echo(header)
    kept, problems = [], 0
    for item in predict_images(source, images, invert=invert, max_pixels=max_pixels, batch_size=batch_size, tta=views):
        if isinstance(item, ImageProblem):
            problems += 1
            click.echo(f"Error: {item}", err=True)
        elif not as_json:
            click.echo(format_prediction(item, source.class_names, top_k))
        if as_json:
            kept.append(item)
    if as_json:
        ensemble = source.record() if exported is None and len(source.members) > 1 else None
        document = predictions_document(path, chosen, kept, source.class_names, top_k, model=exported, tta=views, ensemble=ensemble)
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    if problems:
        ctx.exit(2)



@main.command(cls=TensorFlowCommand)
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("-f", "--format", "formats", multiple=True, required=True, metavar="FORMAT",
              help="savedmodel, tflite (float32), tflite-dynamic (dynamic-range quantised), tflite-int8 (full integer), "
                   "or all; repeatable or comma-separated.")
@click.option("-o", "--output", metavar="DIR", type=click.Path(file_okay=False),
              help="Folder that receives the files and export.json (default: RUN_DIR/export).")
@click.option("--tta", type=click.IntRange(min=1), metavar="N", help=TTA_HELP + " Done inside the exported model.")
@click.pass_context
def export(ctx, run_dirs, formats, output, tta):
    """Export RUN_DIR's best model for servers (SavedModel) and phones (TensorFlow Lite), each checked against it.

    Every exported model takes raw uint8 images at the run's stored image size (the run's
    resize, pad and rescale are inside it) and outputs one probability per class. Before a
    file is kept, its predictions on the run's held-out images are compared with best.keras:
    float formats must agree on at least 99.5% of them; quantised ones report their accuracy
    change. export.json records each file's format, size, input, output and check.
    Nothing is written unless every requested format passes. cnnlab predict --model FILE runs them.
    Several RUN_DIRs, or one folder of runs (a cv folder), export as one model that runs each
    and averages their probabilities (into that folder's export/, or the runs' common folder's).
    Runs on TensorFlow, whose formats these are, whichever backend trained RUN_DIR.
    """
    from cnnlab.deploy.export import export_run, format_result

    result = export_run(list(run_dirs), formats, output=output, tta=tta, warn=lambda text: click.echo(f"Warning: {text}", err=True),
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
    first held-out sample when none is given), grad_cam_<layer>.png (where the predicted class
    looks: Grad-CAM of the last layer with image-shaped output, or of --layer) and
    architecture.png (needs pydot and Graphviz: pip install 'cnnlab[diagram]'), else architecture.txt.
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

    from cnnlab.rundir.listing import find_groups, find_runs, name_in_group, runs_in_group, summarize_group, summarize_run
    from cnnlab.tracking.tables import format_groups_table, format_runs_table

    rows = [summarize_run(run_dir) for run_dir in find_runs(runs_dir)]
    groups = find_groups(runs_dir)
    if show_all:
        for folder, kind in groups:
            rows += [dict(summarize_run(run_dir), name=name_in_group(folder, run_dir)) for run_dir in runs_in_group(folder, kind)]
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
