"""`cnnlab evaluate`: score a run's best model on held-out data, per class, with figures.

The images are the splits training made (same config, same seed, so the same
samples) and go through the run's recorded preprocessing, so the numbers are the
ones training would report. Results go to <run>/eval/; nothing train wrote is
touched, and the report holds no timestamp, so evaluating twice writes the same file.
"""

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab.data import sources as data
from cnnlab.tracking import plots
from cnnlab.rundir import ensemble, files as run_files
from cnnlab.errors import DataError
from cnnlab.rundir.held_out import HeldOut, check_image_shape, folder_files, load_split
from cnnlab.deploy.inference import class_probabilities
from cnnlab.config.intervals import format_accuracy, wilson_interval
from cnnlab.config.metric_names import accuracy_key
from cnnlab.data.array_batches import make_dataset
from cnnlab.data.preprocessing import output_shape, preprocess_images, preprocessing_from_record
from cnnlab.data.tta import make_tta
from cnnlab.tracking.tables import RIGHT, Column, format_table
from cnnlab.inspect import gradcam, hardest

WORST_SHOWN = 25  # a 5x5 grid of the most confident mistakes
PATH_SOURCES = ("image_folder", "npz", "mnist", "fashion_mnist")  # sources that read data.path, so --data can replace it
PER_CLASS_COLUMNS = (Column("class"), Column("precision", RIGHT), Column("recall", RIGHT), Column("f1-score", RIGHT),
                     Column("support", RIGHT))


@dataclass(frozen=True)
class Evaluation:
    run_dir: Path
    split: str
    description: str
    report: dict  # what eval/<split>.json holds
    paths: run_files.EvalPaths
    status: run_files.RunStatus  # how training ended; kept out of the report, which describes only the model and the data it scored


def evaluate_run(run_dir, split=None, data_path=None, warn=None, worst=None, tta=None):
    """Scores the run's best model on its test split (val where there is none), `split`, or all of `data_path`.

    `run_dir` may name several runs, or a folder of them (a cv folder): they are scored as one
    model, the mean of their probabilities, on a split they share (rundir/ensemble.py). `tta`:
    that many fixed views of each image, their probabilities averaged (data/tta.py); its report
    is eval/<split>-tta<N>.json, so that it sits beside the plain one.

    With `worst`, also ranks the images by their own loss and draws the `worst` highest:
    on the train split, that is where mislabeled images show up.

    `warn` is told when the run did not complete, since its best.keras is then only the best
    of the epochs it got through: after the data is checked, so that a bad input is still
    the one line it always is, and before the scoring, which is what takes time.
    """
    run = ensemble.load_runs(run_dir)
    prep = preprocessing_from_record(run.preprocessing)
    views = make_tta(run.config, output_shape(prep, run.preprocessing["image_shape"]), tta)
    if data_path is not None:
        held_out = load_other_data(run, data_path)
    else:
        held_out = ensemble.same_split(run.members, lambda member: load_split(member, split))
    if run.trained_on_val and held_out.split == "val":
        raise DataError(f"{run.path}: its model is {run.model_description}, so the validation split is no longer held out; "
                        "evaluate it with --split test or --data PATH (metrics.json keeps best.keras's validation scores)")
    status = members_status(run)
    if status.state != run_files.COMPLETED and warn is not None:
        warn(unfinished_warning(run.path, status))
    if getattr(run, "skipped", ()) and warn is not None:
        warn(ensemble.skipped_warning(run))
    batch = run.config.train.batch_size
    if ensemble.is_ensemble(run) or views is not None:
        probabilities = np.concatenate([np.zeros((0, len(run.class_names)), np.float32)] + [
            run.probabilities(preprocess_images(held_out.images[start:start + batch], prep), views)
            for start in range(0, len(held_out.images), batch)])
        # no one Keras model to ask: the loss is the cross-entropy of the averaged probabilities, clipped as Keras clips
        keras_metrics = {"loss": float(-np.mean(np.log(np.clip(probabilities[np.arange(len(held_out.labels)), held_out.labels],
                                                                  1e-7, 1.0))))} if len(held_out.labels) else {}
    else:
        keras_metrics, probabilities = score_one(run, make_dataset(held_out.images, held_out.labels, prep, batch))
    report = make_report(run, held_out, keras_metrics, probabilities)
    report["tta"] = views.record() if views is not None else None
    if run.trained_on_val:  # which of the run's two models these numbers are about (best.keras's runs say nothing, as before)
        report["model"] = run.model_description
    if ensemble.is_ensemble(run):
        report["ensemble"] = run.record()
    if worst is not None:
        report["highest_loss"] = hardest.highest_loss(probabilities, held_out.labels, run.class_names, worst, held_out.names)

    label = held_out.split + (f"-tta{len(views.views)}" if views is not None else "")
    paths = run_files.eval_paths(run.path, label)
    run_files.create_eval_dir(run.path)
    run_files.write_json(paths.report, report)
    write_figures(paths, report, held_out, run, label)
    return Evaluation(run_dir=run.path, split=label, description=held_out.description, report=report, paths=paths,
                      status=status)


def score_one(run, dataset):
    """(Keras' metrics, probabilities) of one run's best.keras: model.evaluate's numbers are the ones training logged."""
    if not run.model.compiled:  # trained.load_model leaves the compile state out: the run's config gives loss and metrics
        from cnnlab.model.builder import compile_model

        compile_model(run.model, run.config)
    keras_metrics = {key: float(value) for key, value in run.model.evaluate(dataset, verbose=0, return_dict=True).items()}
    return keras_metrics, class_probabilities(run.model.predict(dataset, verbose=0), len(run.class_names))


def members_status(run):
    """How training ended, for a run; for an ensemble, the first member that did not complete (else completed)."""
    statuses = [run_files.read_status(member.path) for member in run.members]
    return next((status for status in statuses if status.state != run_files.COMPLETED), statuses[0])


def unfinished_warning(run_dir, status):
    reason = f" ({status.reason})" if status.reason else ""
    return f"{run_dir} status is {status.state}{reason}: scoring its {run_files.MODEL} so far"


# ---------------------------------------------------------------- which images


def load_other_data(run, data_path):
    """Every labelled image of another folder or .npz of the kind the run trained on; none of it was split by training."""
    data_config = data_config_for(run, Path(data_path))
    source = data.load_arrays(data_config)
    description = source.description
    images, labels = source.all_images()
    labels = labels_in_run_order(labels, source.class_names, run.class_names, description)
    check_image_shape(images, run, description)
    names = tuple(map(str, folder_files(data_config.path)[0])) if data_config.source == "image_folder" else None
    if names is not None and len(names) != len(labels):
        names = None  # the folder changed while it was read: no names rather than wrong ones
    return HeldOut(images, labels, f"data-{safe_name(Path(data_path))}", f"{description}: all images", names)


def data_config_for(run, path):
    """The run's data section with `path` in place of its data: same source, colour mode and image size.

    A digits run has no path of its own, so --data there names an .npz file or an image
    folder of 8x8 images, read at the run's stored image size.
    """
    data_config = run.config.data
    if data_config.source in PATH_SOURCES:
        return dataclasses.replace(data_config, path=str(path))
    if path.is_dir():
        height, width, _ = run.preprocessing["image_shape"]
        return dataclasses.replace(data_config, source="image_folder", path=str(path), image_size=(height, width))
    return dataclasses.replace(data_config, source="npz", path=str(path))


def labels_in_run_order(labels, names, run_names, where):
    """Labels re-indexed to the run's class order by name (an image folder may hold fewer classes)."""
    names, run_names = tuple(names), tuple(run_names)
    if names == run_names:
        return labels
    if names == tuple(str(i) for i in range(len(names))) and len(names) <= len(run_names):
        return labels  # an .npz without class_names numbers its classes as the run does
    unknown = [name for name in names if name not in run_names]
    if unknown:
        raise DataError(f"{where}: classes {', '.join(unknown)} are not among the run's classes ({', '.join(run_names)})")
    return np.asarray([run_names.index(name) for name in names], dtype=np.int32)[labels]


def safe_name(path):
    """A file-name-safe label for --data PATH, so its report never lands on eval/test.json."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.resolve().name if path.name in ("", ".", "..") else path.stem) or "data"


# ---------------------------------------------------------------- the report


def make_report(run, held_out, keras_metrics, probabilities):
    """Plain data for eval/<split>.json: overall scores, the per-class table, the confusion matrix, the worst mistakes."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels, names = held_out.labels, run.class_names
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    ks = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=ks, zero_division=0)
    per_class = [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for name, p, r, f, s in zip(names, precision, recall, f1, support)]
    correct = int((predicted == labels).sum())
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:WORST_SHOWN]
    keras_accuracy = accuracy_key(keras_metrics)
    return {
        "run": str(run.path),
        "split": held_out.split,
        "data": held_out.description,
        "num_images": int(len(labels)),
        "loss": keras_metrics.get("loss"),
        # Keras' own accuracy where the model was compiled with one, so the numbers match model.evaluate
        "accuracy": keras_metrics[keras_accuracy] if keras_accuracy else correct / len(labels),
        "num_correct": correct,
        # Wilson's 95% interval of num_correct / num_images: how far the accuracy could be from the model's true one
        "accuracy_ci95": dict(zip(("low", "high"), wilson_interval(correct, len(labels)))),
        "keras_metrics": keras_metrics,
        "per_class": per_class,
        "macro_avg": average(per_class, weighted=False),
        "weighted_avg": average(per_class, weighted=True),
        "confusion_matrix": {"classes": list(names), "rows": "true class", "columns": "predicted class",
                             "counts": confusion_matrix(labels, predicted, labels=ks).tolist()},
        "worst_mistakes": [{"index": int(i), "true": names[labels[i]], "predicted": names[predicted[i]],
                            "confidence": float(confidence[i])} for i in worst],
        "preprocessing": run.preprocessing,
    }


def average(per_class, weighted):
    weights = np.asarray([row["support"] for row in per_class], dtype=float) if weighted else np.ones(len(per_class))
    total = weights.sum()
    result = {key: float(np.dot(weights, [row[key] for row in per_class]) / total) if total else 0.0
              for key in ("precision", "recall", "f1")}
    return {**result, "support": int(sum(row["support"] for row in per_class))}


def write_figures(paths, report, held_out, run, label):
    counts = report["confusion_matrix"]["counts"]
    title = f"{run.path.name}: {label}"
    fig = plots.plot_confusion_matrix(counts, run.class_names, title=f"{title} ({report['num_images']} images)")
    run_files.save_figure(fig, paths.confusion_matrix)
    worst = report["worst_mistakes"]
    captions = [f"true: {m['true']}\npredicted: {m['predicted']}\nconfidence {m['confidence']:.2f}" for m in worst]
    images = held_out.images[[m["index"] for m in worst]]
    # where the wrong class looked: a few dozen gradients of a small model, cheap beside the scoring
    # an ensemble has no one model whose gradients to follow: its mistakes are drawn without overlays
    overlays = None if ensemble.is_ensemble(run) else gradcam.heatmaps(
        run.model, preprocess_images(images, preprocessing_from_record(run.preprocessing)))
    fig = plots.plot_image_grid(images, captions, overlays=overlays, empty_text="no misclassified images",
                                title=f"{title}: the {len(worst)} most confident of {report['num_images'] - report['num_correct']} mistakes"
                                      + (", Grad-CAM of the predicted class over each" if overlays is not None else ""))
    run_files.save_figure(fig, paths.misclassified)
    if "highest_loss" in report:
        entries = report["highest_loss"]
        hardest.write_contact_sheet(hardest.contact_sheet_path(paths, label), entries, held_out.images,
                                    title=f"{title}: the {len(entries)} of highest loss among {report['num_images']} images")


def evaluation_document(evaluation):
    """The --json output: eval/<split>.json's numbers, the run's status and where the files went, for scripts."""
    paths = evaluation.paths
    files = {"report": str(paths.report), "confusion_matrix": str(paths.confusion_matrix),
             "misclassified": str(paths.misclassified)}
    if "highest_loss" in evaluation.report:
        files["highest_loss"] = str(hardest.contact_sheet_path(paths, evaluation.split))
    return {**evaluation.report,
            "run_status": {"state": evaluation.status.state, "reason": evaluation.status.reason or None},
            "files": files}


def format_report(evaluation):
    """The report as a person reads it: scores, an aligned per-class table, and where the files went."""
    r = evaluation.report
    lines = [f"Run: {evaluation.run_dir}", *([f"Model: {r['model']}"] if "model" in r else [])]
    if "ensemble" in r:
        lines.append(f"Ensemble: the mean of {r['ensemble']['num_members']} runs' probabilities ({', '.join(r['ensemble']['members'])})")
    if r.get("tta"):
        lines.append(f"TTA: {r['tta']['views']} views ({', '.join(r['tta']['names'])})")
    lines.append(f"Data: {r['data']} ({r['num_images']} images)")
    if r["loss"] is not None:
        lines.append(f"Loss: {r['loss']:.4f}")
    lines += [f"Accuracy: {format_accuracy(r['accuracy'], r['num_images'], r['num_correct'])}", ""]
    rows = [(row["class"], row) for row in r["per_class"]] + [("macro avg", r["macro_avg"]), ("weighted avg", r["weighted_avg"])]
    table = format_table(PER_CLASS_COLUMNS, [(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                                              str(row["support"])) for name, row in rows]).splitlines()
    table.insert(1 + len(r["per_class"]), "")  # the averages stand apart from the classes
    lines += table
    written = [evaluation.paths.report.name, evaluation.paths.confusion_matrix.name, evaluation.paths.misclassified.name]
    if "highest_loss" in r:
        lines += ["", hardest.format_highest_loss(r["highest_loss"], evaluation.split)]
        written.append(hardest.contact_sheet_path(evaluation.paths, evaluation.split).name)
    lines += ["", f"Wrote {evaluation.paths.report.parent}/: {', '.join(written)}"]
    return "\n".join(lines)
