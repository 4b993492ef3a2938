"""`cnnlab runs --plot`: two tiny digits runs (and a comparison's) drawn in one figure, with the settings that differ."""

import csv
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from cnnlab.rundir import files as run_files, listing
from cnnlab.config.best_epoch import best_epoch_of, history_of, monitor_of
from cnnlab.config.experiment import load_config
from cnnlab.config.keypaths import flatten
from cnnlab.tracking.runs_plot import MISSING, curve_names, differing_settings, draw_runs, load_plotted_run

from conftest import TINY_DIGITS, assert_one_line_error, run_cli, train_config

# steps_per_execution is pinned: left at auto, each run records what auto became for its
# batch size, which would be a third difference beside the two the runs were given
CONFIG = TINY_DIGITS + "  steps_per_execution: 4\ncompile:\n  optimizer: {name: adam, learning_rate: 0.001}\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A runs folder with two runs that differ in learning rate and batch size, trained once for the module."""
    root = tmp_path_factory.mktemp("lab")
    config = root / "tiny.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    a = train_config(config, root / "runs").run_dir
    b = train_config(config, root / "runs", "--set", "compile.optimizer.learning_rate=0.01", "--batch-size", "32").run_dir
    return root / "runs", a, b


@pytest.fixture(scope="module")
def comparison(lab, tmp_path_factory):
    """A compare-optimizers folder (adam and sgd, one epoch) beside the two runs."""
    runs_dir = lab[0]
    config = tmp_path_factory.mktemp("compare") / "tiny.yaml"
    config.write_text(TINY_DIGITS, encoding="utf-8")
    result = run_cli("compare-optimizers", config, "--runs-dir", runs_dir, "--epochs", 1, "-o", "adam", "-o", "sgd")
    assert result.exit_code == 0, result.output
    (folder,) = [path for path, kind in listing.find_groups(runs_dir) if kind == "compare"]
    return folder


def listed_names(runs_dir):
    """The run names `cnnlab runs --all` gives, as a user would copy them."""
    result = run_cli("runs", "--runs-dir", runs_dir, "--all", "--json")
    assert result.exit_code == 0, result.output
    return [row["name"] for row in json.loads(result.output)["runs"]]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- a user's session


def test_plotting_two_runs_writes_a_png(lab):
    runs_dir, a, b = lab
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a.name, b.name)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"Wrote {runs_dir / 'runs-plot.png'}: 2 runs, loss and accuracy by epoch"
    with Image.open(runs_dir / "runs-plot.png") as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0


def test_the_printed_table_names_exactly_the_two_settings_that_differ(lab, tmp_path):
    runs_dir, a, b = lab
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a, b, "-o", tmp_path / "two.png")
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()[2:]
    assert table[0] == "Settings that differ:"
    assert [line.split() for line in table[1:]] == [
        ["SETTING", a.name, b.name],
        ["compile.optimizer.learning_rate", "0.001", "0.01"],
        ["train.batch_size", "64", "32"],
    ]


def test_one_run_is_drawn_without_a_table(lab, tmp_path):
    runs_dir, a, _ = lab
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a.name, "-o", tmp_path / "one.png")
    assert (result.exit_code, result.output) == (0, f"Wrote {tmp_path / 'one.png'}: 1 run, loss and accuracy by epoch\n")
    assert (tmp_path / "one.png").stat().st_size > 0


def test_a_run_inside_a_comparison_beside_a_plain_run(lab, comparison, tmp_path):
    runs_dir, a, _ = lab
    child = next(name for name in listed_names(runs_dir) if name.startswith(f"{comparison.name}/") and "sgd" in name)
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", child, a.name, "-o", tmp_path / "mixed.png")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[3:]}
    assert rows["SETTING"] == [child, a.name]
    assert rows["compile.optimizer.name"] == ["sgd", "adam"]
    assert rows["train.epochs"] == ["1", "2"]
    assert rows["compile.optimizer.learning_rate"] == ["-", "0.001"]  # the comparison's sgd runs at Keras' default
    assert rows["train.steps_per_execution"][0].isdigit()  # the comparison's auto, as the number it became
    assert Image.open(tmp_path / "mixed.png").format == "PNG"


def test_a_sweep_trial_by_the_name_the_listing_gives_it(lab, tmp_path):
    runs_dir, a, b = lab
    sweep = tmp_path / "runs" / "sweep-tiny-20260101-120000"
    shutil.copytree(a, sweep / "trials" / "trial-0-20260101-120001")
    (sweep / "sweep.json").write_text("{}")
    (name,) = listed_names(tmp_path / "runs")
    assert name == "sweep-tiny-20260101-120000/trial-0-20260101-120001"
    result = run_cli("runs", "--runs-dir", tmp_path / "runs", "--plot", name, b, "-o", tmp_path / "sweep.png")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[3].split() == ["SETTING", name, b.name]


def test_plotting_does_not_import_tensorflow(lab, tmp_path):
    runs_dir, a, b = lab
    code = ("import sys; from click.testing import CliRunner; from cnnlab.cli import main; "
            "r = CliRunner().invoke(main, ['runs', '--plot', *sys.argv[1:]]); "
            "print(r.exit_code, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(a), str(b), "-o", str(tmp_path / "fig.png")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "False"]


# ---------------------------------------------------------------- the pieces


def test_differing_settings_of_two_flattened_configs():
    first = flatten({"name": "a", "seed": 1, "compile": {"optimizer": {"name": "adam"}},
                     "model": {"layers": [{"Conv2D": {"filters": 4, "kernel_size": [3, 3]}}]}, "sweep": None})
    second = flatten({"name": "b", "seed": 1, "compile": {"optimizer": {"name": "sgd", "momentum": 0.9}},
                      "model": {"layers": [{"Conv2D": {"filters": 8, "kernel_size": [3, 3]}}]}, "sweep": {"trials": 4}})
    assert differing_settings([first, second]) == [
        ("compile.optimizer.name", ["adam", "sgd"]),
        ("model.layers[0].Conv2D.filters", [4, 8]),
        ("compile.optimizer.momentum", [MISSING, 0.9]),
    ]


def test_the_loaded_curves_are_history_csv(lab):
    _, a, _ = lab
    rows = read_csv(a / "history.csv")
    plotted = load_plotted_run(a, a.name)
    assert plotted.history == {key: [int(row[key]) if key == "epoch" else float(row[key]) for row in rows] for key in rows[0]}
    assert curve_names([plotted.history]) == ["loss", "accuracy"]


def test_the_marked_epoch_is_the_checkpoints_best_epoch(lab):
    _, a, b = lab
    plotted = [load_plotted_run(run_dir, run_dir.name) for run_dir in (a, b)]
    fig = draw_runs(plotted, ["loss", "accuracy"], [])
    marked = {tuple(zip(*line.get_data())) for line in fig.axes[0].lines if line.get_linestyle() == "None"}
    expected = set()
    for run_dir, run in zip((a, b), plotted):
        rows = [{key: float(value) for key, value in row.items()} for row in read_csv(run_dir / "history.csv")]
        best = best_epoch_of(history_of(rows), *monitor_of(load_config(run_dir / "config.yaml")))
        assert run.best_epoch == best == json.loads((run_dir / "metrics.json").read_text())["best_epoch"]
        expected.add(((best, rows[best - 1]["val_loss"]),))
    assert marked == expected


def test_fine_tunings_second_phase_is_marked_where_it_starts(lab, tmp_path):
    _, a, _ = lab
    run_dir = shutil.copytree(a, tmp_path / "fine-tuned")
    rows = read_csv(run_dir / "history.csv")
    for row, phase in zip(rows, (1, 2)):
        row["phase"] = phase
    run_files.write_history(run_dir / "history.csv", rows)
    fig = draw_runs([load_plotted_run(run_dir, run_dir.name)], ["loss", "accuracy"], [])
    vertical = [line.get_xdata() for line in fig.axes[0].lines if line.get_linestyle() == ":"]
    assert [list(x) for x in vertical] == [[1.5, 1.5]]


# ---------------------------------------------------------------- bad inputs: one line, nothing written


def test_a_folder_that_is_not_a_run(lab, tmp_path):
    runs_dir, a, _ = lab
    (tmp_path / "notes").mkdir()
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a, tmp_path / "notes", "-o", tmp_path / "fig.png")
    assert_one_line_error(result, f"{tmp_path / 'notes'}: not a run folder, nor a run in {runs_dir}; "
                                  f"cnnlab runs --all --runs-dir {runs_dir} lists them", exact=True)
    assert not (tmp_path / "fig.png").exists()


def test_a_comparison_folder_is_not_one_run(lab, comparison, tmp_path):
    runs_dir, a, _ = lab
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", comparison.name, a, "-o", tmp_path / "fig.png")
    assert_one_line_error(result, f"{comparison.name}: a comparison folder, not one run; name its runs as cnnlab runs "
                                  f"--all lists them ({comparison.name}/RUN)", exact=True)
    assert not (tmp_path / "fig.png").exists()


def test_a_sweep_folder_is_not_one_run(lab, tmp_path):
    _, a, _ = lab
    sweep = tmp_path / "sweep-tiny-20260101-120000"
    shutil.copytree(a, sweep / "trials" / "trial-0-20260101-120001")
    shutil.copy(a / "config.yaml", sweep / "config.yaml")  # a sweep folder has a config.yaml, as a run has
    (sweep / "sweep.json").write_text("{}")
    result = run_cli("runs", "--runs-dir", tmp_path, "--plot", sweep.name, "-o", tmp_path / "fig.png")
    assert_one_line_error(result, f"{sweep.name}: a sweep folder, not one run; name its runs as cnnlab runs "
                                  f"--all lists them ({sweep.name}/RUN)", exact=True)
    assert not (tmp_path / "fig.png").exists()


@pytest.mark.parametrize("history", [None, "", "epoch,accuracy,loss,val_accuracy,val_loss\n"])
def test_a_run_without_an_epoch_in_its_history(lab, tmp_path, history):
    runs_dir, a, _ = lab
    run_dir = shutil.copytree(a, tmp_path / "starting")
    run_files.set_status(run_dir, run_files.RUNNING)
    if history is None:
        (run_dir / "history.csv").unlink()
        expected = f"{run_dir}: no history.csv yet (status running); a run has curves once it has trained an epoch"
    else:
        (run_dir / "history.csv").write_text(history)
        expected = f"{run_dir / 'history.csv'}: no epochs in it yet; a run has curves once it has trained an epoch"
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a, run_dir, "-o", tmp_path / "fig.png")
    assert_one_line_error(result, expected, exact=True)
    assert not (tmp_path / "fig.png").exists()


def test_a_history_with_a_value_that_is_not_a_number(lab, tmp_path):
    _, a, _ = lab
    run_dir = shutil.copytree(a, tmp_path / "edited")
    (run_dir / "history.csv").write_text("epoch,loss,val_loss\n1,0.5,oops\n")
    result = run_cli("runs", "--plot", run_dir, "-o", tmp_path / "fig.png")
    assert_one_line_error(result, f"cannot read {run_dir / 'history.csv'}: could not convert string to float: 'oops'", exact=True)


def test_an_output_that_cannot_be_written(lab, tmp_path):
    _, a, b = lab
    result = run_cli("runs", "--plot", a, b, "-o", tmp_path / "missing" / "fig.png")
    assert_one_line_error(result, f"cannot write {tmp_path / 'missing' / 'fig.png'}: No such file or directory", exact=True)
    (tmp_path / "taken.png").mkdir()
    result = run_cli("runs", "--plot", a, b, "-o", tmp_path / "taken.png")
    assert_one_line_error(result, f"cannot write {tmp_path / 'taken.png'}: Is a directory", exact=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["taken.png"]  # no temporary file left behind
    assert list((tmp_path / "taken.png").iterdir()) == []


def test_an_output_that_is_not_a_png(lab, tmp_path):
    _, a, _ = lab
    result = run_cli("runs", "--plot", a, "-o", tmp_path / "fig.pdf")
    assert_one_line_error(result, f"--output {tmp_path / 'fig.pdf'}: expected a .png file name; the figure is written as PNG", exact=True)


def test_the_same_run_twice(lab, tmp_path):
    runs_dir, a, _ = lab
    result = run_cli("runs", "--runs-dir", runs_dir, "--plot", a, a.name, "-o", tmp_path / "fig.png")
    assert_one_line_error(result, f"{a.name}: {a.name} is named twice; name each run once", exact=True)


@pytest.mark.parametrize("args, expected", [
    (["--plot", "--json"], "--plot draws the RUNs it is given, as a figure; leave out --json"),
    (["--plot", "--all"], "--plot draws the RUNs it is given, as a figure; leave out --all"),
    (["--plot"], "--plot needs at least one RUN: a run folder, or a name as cnnlab runs --all lists it"),
    (["-o", "fig.png"], "RUN and --output are for --plot: cnnlab runs --plot RUN [RUN...] (cnnlab runs alone lists every run)"),
])
def test_flags_that_do_not_go_with_plot(lab, args, expected):
    runs_dir, a, _ = lab
    result = run_cli("runs", "--runs-dir", runs_dir, *args, *([a.name] if args != ["--plot"] else []))
    assert_one_line_error(result, expected, exact=True)
