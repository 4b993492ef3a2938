"""What README.md and docs/*.md show of cnnlab's output, made by running cnnlab (cog calls these functions).

A page never holds a hand-copied `--help` text or command output: it holds a cog block that
calls one function here, and `cog --check` in CI fails when what is written differs from
what the code prints now. Regenerate every page after a change with one command, from the
repository root:

    cog -r -I docs README.md docs/*.md

How the outputs are made, so that generating them again gives the same pages:

- Every command a page shows is one step of SESSION, a user's session in a fresh folder
  (the "lab": configs/ copied from the repository, runs/ inside it), run once, in order,
  through click's CliRunner in this process. A page names the steps it shows, so the run
  folders it names are the ones the other pages name too. Steps name run folders by the
  clock below (the first folder made is …-20261201-090000, the next …-090100, and so on),
  so a new step goes at the end of SESSION, or the later folders' names change.
- Training is tiny (digits_cnn for a few epochs) and on one core (CNNLAB_CORES=1, which
  also fixes train.batch_parts at 1), so the figures do not depend on the machine's cores.
- Volatile parts are normalized: folder timestamps come from a clock that starts at
  2026-12-01 09:00:00 and advances one minute per folder; timings print as `…`; the lab's
  absolute path prints as /home/me/lab; Keras' progress bar shows its last state, as a
  terminal does; pydot is hidden, so `visualize` writes architecture.txt on every machine.
- Keras' layer names count up per process; each step starts with a cleared Keras session,
  as a new `cnnlab` process would.
"""

import atexit
import os
import re
import shlex
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHOWN_HOME = "/home/me"  # how the lab's home folder prints: the lab itself is SHOWN_HOME/lab
FIRST_FOLDER_TIME = datetime(2026, 12, 1, 9, 0, 0)
WIDTH = 80  # the terminal width help texts and Keras' model summary are formatted for


# ---------------------------------------------------------------- the session every page quotes


@dataclass(frozen=True)
class Step:
    """One command a page shows, as typed; `exit_code` is what it must end with, or generation stops."""

    name: str
    command: str
    exit_code: int = 0
    interrupt_at_epoch: int = None  # Ctrl-C at the first batch of this (1-based) epoch, delivered by a callback
    tables: tuple = ()  # first words of aligned tables whose volatile columns are masked and realigned


SESSION = (
    Step("init", "cnnlab init digits_cnn"),
    Step("train", "cnnlab train digits_cnn.yaml --epochs 5"),
    Step("evaluate", "cnnlab evaluate runs/digits_cnn-20261201-090000"),
    Step("predict", "cnnlab predict five.png three_on_paper.png"),
    Step("predict-errors", "cnnlab predict five.png three_on_paper.png notes.png missing.png", exit_code=2),
    Step("visualize", "cnnlab visualize runs/digits_cnn-20261201-090000 five.png --html"),
    Step("visualize-bad-layer", "cnnlab visualize runs/digits_cnn-20261201-090000 five.png --layer conv2", exit_code=2),
    Step("export", "cnnlab export runs/digits_cnn-20261201-090000 --format tflite --format savedmodel --format tflite-int8"),
    Step("predict-model", "cnnlab predict --model runs/digits_cnn-20261201-090000/export/model_int8.tflite five.png three_on_paper.png"),
    Step("train-second", "cnnlab train configs/digits_cnn.yaml --epochs 5 --batch-size 64 "
                         "--set compile.optimizer.learning_rate=0.003 -q"),
    Step("runs-plot", "cnnlab runs --plot digits_cnn-20261201-090000 digits_cnn-20261201-090100"),
    Step("train-interrupted", "cnnlab train configs/digits_cnn.yaml --epochs 3", exit_code=130, interrupt_at_epoch=2),
    Step("evaluate-interrupted", "cnnlab evaluate runs/digits_cnn-20261201-090200"),
    Step("resume", "cnnlab train --resume runs/digits_cnn-20261201-090200"),
    Step("compare", "cnnlab compare-optimizers configs/digits_cnn.yaml -o adam -o sgd:learning_rate=0.05,momentum=0.9 --epochs 3",
         tables=("| #",)),
    Step("sweep", "cnnlab sweep configs/digits_cnn.yaml --trials 3 --epochs 2"),
    Step("runs", "cnnlab runs", tables=("RUN", "SWEEP, COMPARISON OR CV")),
    Step("check", "cnnlab check configs/digits_cnn.yaml"),
    Step("check-pooling", "cnnlab check configs/digits_cnn.yaml --set model.input_shape=[1,1,1]", exit_code=2),
    Step("check-optimizer", "cnnlab check configs/digits_cnn.yaml --set compile.optimizer.name=adamm", exit_code=2),
    Step("check-set-typo", "cnnlab check configs/digits_cnn.yaml --set model.layers[4].Dens.units=128", exit_code=2),
    Step("check-sweep-choice", "cnnlab check configs/digits_cnn.yaml --set 'sweep.params={train.batch_size: {choice: [0, 32]}}'",
         exit_code=2),
    Step("check-weights-offline", "CNNLAB_OFFLINE=1 cnnlab check configs/photos_mobilenet.yaml", exit_code=2),
    Step("train-data-offline", "CNNLAB_OFFLINE=1 cnnlab train configs/mnist_3conv.yaml", exit_code=2),
    Step("evaluate-worst", "cnnlab evaluate runs/digits_cnn-20261201-090000 --split train --worst 5"),
    Step("lr-find", "cnnlab lr-find configs/digits_cnn.yaml"),
    Step("cv", "cnnlab cv configs/digits_cnn.yaml --folds 3 --epochs 2"),
)
STEPS = {step.name: step for step in SESSION}


class Lab:
    """The folder the session runs in, its outputs once run, and what prints instead of its absolute path."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="cnnlab-docs-")).resolve()  # as cnnlab prints absolute paths
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)
        self.home = self.root / SHOWN_HOME.strip("/")
        self.path = self.home / "lab"
        self.outputs = {}
        self.while_training = set()  # what a run folder holds while its run trains (at the session's Ctrl-C)

    def shown(self, text):
        return text.replace(str(self.root), "")


_lab = None


def lab():
    """The session, run on first use; every later call returns the same outputs."""
    global _lab
    if _lab is None:
        _lab = Lab()
        run_session(_lab)
    return _lab


def run_session(lab):
    prepare_environment(lab)
    make_lab_files(lab.path)
    previous = os.getcwd()
    os.chdir(lab.path)
    try:
        with folder_clock(), hidden_module("pydot"):
            for step in SESSION:
                lab.outputs[step.name] = run_step(step, lab)
    finally:
        os.chdir(previous)


def prepare_environment(lab):
    """The environment every step sees, whatever the machine's: one core, offline, TensorFlow, a known terminal."""
    os.environ.update({
        "CNNLAB_CORES": "1", "CNNLAB_OFFLINE": "1", "KERAS_BACKEND": "tensorflow", "COLUMNS": str(WIDTH), "LINES": "50",
        "KERAS_HOME": str(lab.home / ".keras"), "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    for variable in ("TF_CONFIG", "MLFLOW_TRACKING_URI", "CNNLAB_CONNECT_TIMEOUT", "CNNLAB_STEP_TIMEOUT"):
        os.environ.pop(variable, None)


def make_lab_files(path):
    """The shipped configs, and the pictures the session predicts: the last 5 and the last 3 of scikit-learn's
    digits, drawn larger; the 3 dark on light, as ink on paper; and a text file named like a picture."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    shutil.copytree(REPO / "configs", path / "configs")
    digits = load_digits()

    def save(index, name, invert=False):
        pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
        if invert:
            pixels = 255 - pixels
        Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(path / name)

    last = {label: index for index, label in enumerate(digits.target)}
    save(last[5], "five.png")
    save(last[3], "three_on_paper.png", invert=True)
    (path / "notes.png").write_text("not a picture\n")


class folder_clock:
    """Run and group folders are named after a clock that starts at FIRST_FOLDER_TIME and ticks one minute per
    folder, so that their names are the same on every run of the session."""

    def __enter__(self):
        from cnnlab.rundir import files as runs

        if not hasattr(runs, "datetime"):
            raise RuntimeError("docs/gen.py: cnnlab.rundir.files.datetime, which names run folders, has moved; update folder_clock")
        ticks = iter(range(10_000))

        class Clock(datetime):
            @classmethod
            def now(cls, tz=None):
                moment = FIRST_FOLDER_TIME + timedelta(minutes=next(ticks))
                return cls(*moment.timetuple()[:6])

        self.runs, self.real = runs, runs.datetime
        runs.datetime = Clock

    def __exit__(self, *exc):
        self.runs.datetime = self.real


class hidden_module:
    """`import NAME` fails inside, as where NAME is not installed."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.saved = sys.modules.get(self.name, ...)
        sys.modules[self.name] = None

    def __exit__(self, *exc):
        if self.saved is ...:
            del sys.modules[self.name]
        else:
            sys.modules[self.name] = self.saved


def run_step(step, lab):
    """`step.command` through CliRunner, as the terminal would show it; a different exit code stops generation."""
    from click.testing import CliRunner

    from cnnlab.cli import main

    env, args = split_command(step.command)
    clear_keras_session()
    with environment(env), interrupted_at(step.interrupt_at_epoch, lab.while_training):
        result = CliRunner().invoke(main, args, prog_name="cnnlab", terminal_width=WIDTH)
    if result.exit_code != step.exit_code:
        detail = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
        raise RuntimeError(f"docs/gen.py: step {step.name!r} ({step.command}) ended with exit code {result.exit_code}, "
                           f"not {step.exit_code}:\n{result.output}\n{detail}")
    return result.output


def split_command(command):
    """`VAR=value ... cnnlab ARGS` as ({VAR: value}, [ARGS])."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == "cnnlab", command
    return env, words[1:]


class environment:
    def __init__(self, values):
        self.values = values

    def __enter__(self):
        self.saved = {key: os.environ.get(key) for key in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def clear_keras_session():
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()


class interrupted_at:
    """With an epoch, the run's callbacks end with one that raises KeyboardInterrupt at that epoch's first batch: what
    Ctrl-C does there, at a moment that is the same on every run of the session. What the run folder holds at that
    moment (a run still training) is kept in `seen`."""

    def __init__(self, epoch, seen):
        self.epoch = epoch
        self.seen = seen

    def __enter__(self):
        if self.epoch is None:
            return
        import keras

        from cnnlab.training import callbacks

        stop_at, seen = self.epoch - 1, self.seen

        class CtrlC(keras.callbacks.Callback):
            def __init__(self, run_dir):
                super().__init__()
                self.run_dir = run_dir

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_begin(self, batch, logs=None):
                if self.epoch == stop_at:
                    seen.update(names_in(self.run_dir))
                    raise KeyboardInterrupt

        self.module, self.real = callbacks, callbacks.make_callbacks
        callbacks.make_callbacks = lambda config, run_dir, *args, **kwargs: (
            self.real(config, run_dir, *args, **kwargs) + [CtrlC(run_dir)])

    def __exit__(self, *exc):
        if self.epoch is not None:
            self.module.make_callbacks = self.real


# ---------------------------------------------------------------- normalizing what a terminal shows

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS_TIME = re.compile(r"(\d+/\d+ ━+ )\d+s \d+(?:ms|us|s)/step")
SECONDS = re.compile(r"(?<![\w.])\d+(?:\.\d+)? s\b")
RATE = re.compile(r"\b\d+ images/s\b")
TIME_COLUMNS = ("s/epoch",)  # table columns of seconds without a unit in their cells
SITE_PACKAGES = re.compile(r"/\S*/site-packages/")  # where a library's warning names its file


def as_terminal_shows(text):
    """Carriage returns and backspaces applied as a terminal applies them, colours dropped: Keras' progress bar
    leaves its last state."""
    lines = []
    for raw in ANSI.sub("", text).split("\n"):
        cells, cursor = [], 0
        for char in raw:
            if char == "\r":
                cursor = 0
            elif char == "\b":
                cursor = max(cursor - 1, 0)
            else:
                if cursor < len(cells):
                    cells[cursor] = char
                else:
                    cells.append(char)
                cursor += 1
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def mask_times(text):
    """Durations and speeds differ on every run: they print as `…`."""
    text = PROGRESS_TIME.sub(r"\1…s …ms/step", text)
    text = RATE.sub("… images/s", text)
    return SECONDS.sub("… s", text)


def realign_tables(text, starts):
    """Aligned tables whose cells `mask_times` shortened, aligned again as cnnlab aligns them (report.format_table)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if any(line.startswith(start) for start in starts):
            end = next((j for j in range(i + 1, len(lines)) if not lines[j].strip()), len(lines))
            lines[i:end] = realigned(lines[i:end])
    return "\n".join(lines)


def realigned(lines):
    if lines[0].startswith("|"):
        return realigned_markdown(lines)
    rows = [[(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", line)] for line in lines]
    count = len(rows[0])
    table = [row for row in rows if len(row) == count]
    if len(table) != len(rows):  # not a table throughout: leave it
        return lines
    right = [len({row[c][1] for row in table}) == 1 and len({row[c][0] for row in table}) > 1 for c in range(count)]
    cells = [[mask_times(cell[2]) for cell in row] for row in table]
    widths = [max(len(row[c]) for row in cells) for c in range(count)]
    return ["  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)).rstrip() for row in cells]


def realigned_markdown(lines):
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    rule = rows[1]
    right = [cell.endswith(":") for cell in rule]
    timed = [title in TIME_COLUMNS for title in rows[0]]
    cells = [[cell if i == 0 else "…" if timed[c] else mask_times(cell) for c, cell in enumerate(row)]
             for i, row in enumerate(row for j, row in enumerate(rows) if j != 1)]
    widths = [max(len(row[c]) for row in cells) for c in range(len(rule))]
    out = ["| " + " | ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)) + " |"
           for row in cells]
    out.insert(1, "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|")
    return out


def normalized(step, output):
    text = as_terminal_shows(output)
    text = realign_tables(text, step.tables)
    text = SITE_PACKAGES.sub(".../site-packages/", mask_times(text))
    return lab().shown(text).rstrip("\n")


# ---------------------------------------------------------------- what pages call


def out(text):
    import cog

    cog.out(text)


def fenced(body, language=""):
    return f"```{language}\n{body}\n```\n"


def transcript(*names, exit_code_of=None):
    """`$ command` and its output for each named step, in one block; `exit_code_of` adds `$ echo $?` after that step."""
    session = lab()
    parts = []
    for name in names:
        step = STEPS[name]
        parts.append(f"$ {step.command}")
        output = normalized(step, session.outputs[name])
        if output:
            parts.append(output)
        if name == exit_code_of:
            parts += ["$ echo $?", str(step.exit_code)]
    return "\n".join(parts)


def show(*names, exit_code_of=None):
    """The named steps of SESSION as a console block."""
    out(fenced(transcript(*names, exit_code_of=exit_code_of), "console"))




def help(*command):
    """`cnnlab COMMAND --help` as it prints now (help needs no session: it starts no backend)."""
    from click.testing import CliRunner

    from cnnlab.cli import main

    with environment({"COLUMNS": str(WIDTH)}):
        result = CliRunner().invoke(main, [*command, "--help"], prog_name="cnnlab", terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    out(fenced(f"$ {' '.join(['cnnlab', *command, '--help'])}\n{result.output.rstrip()}", "console"))




# ---------------------------------------------------------------- listings of what commands write


def names_in(folder):
    return {entry.name + ("/" if entry.is_dir() else "") for entry in Path(folder).iterdir()}


def described_listing(title, described, seen, unseen):
    """`described` ({name: what it is}) as an aligned listing under `title`, checked both ways against `seen`: a name
    cnnlab wrote that is not described, or a description of a name it never wrote (unless listed in `unseen`, what
    the session cannot show), stops generation."""
    undescribed = sorted(seen - set(described))
    if undescribed:
        raise RuntimeError(f"docs/gen.py: {title} holds {', '.join(undescribed)}, which its listing does not describe")
    stale = sorted(set(described) - seen - set(unseen))
    if stale:
        raise RuntimeError(f"docs/gen.py: {title}'s listing describes {', '.join(stale)}, which the session never wrote "
                           "(name it in `unseen` if only other circumstances write it)")
    width = max(len(name) for name in described) + 2
    body = "\n".join(f"  {name:<{width}}{text}".rstrip() for name, text in described.items())
    out(fenced(f"{title}\n{body}", "text"))


def run_folder_listing(described, unseen=()):
    """A run folder's files: those of the session's first run (trained, evaluated, visualized, exported), of its
    interrupted run at the moment it was stopped, and of the runs of its comparison and its sweep."""
    session = lab()
    runs_dir = session.path / "runs"
    seen = names_in(runs_dir / "digits_cnn-20261201-090000") | session.while_training
    for group in [*runs_dir.glob("compare-*"), *runs_dir.glob("sweep-*/trials")]:
        for run in group.iterdir():
            if run.is_dir():
                seen |= names_in(run)
    described_listing("runs/digits_cnn-20261201-090000/", described, seen, unseen)


def sweep_folder_listing(described, unseen=()):
    """The sweep folder of the session's sweep."""
    folder = next((lab().path / "runs").glob("sweep-*"))
    seen = names_in(folder)
    plots = {name for name in seen if name.startswith("slice_")}
    described_listing(f"runs/{folder.name}/", described, (seen - plots) | ({"slice_<path>.png"} if plots else set()), unseen)


def compare_folder_listing(described, unseen=()):
    """The comparison folder of the session's comparison; its run folders show as `<optimizer>-s<seed>-<time>/`."""
    folder = next((lab().path / "runs").glob("compare-*"))
    seen = {name for name in names_in(folder) if not (folder / name).is_dir()} | {"<optimizer>-s<seed>-<time>/"}
    seen = {("initial-s<seed>.weights.h5" if re.fullmatch(r"initial-s\d+\.weights\.h5", name) else name) for name in seen}
    described_listing(f"runs/{folder.name}/", described, seen, unseen)


# ---------------------------------------------------------------- references made from the code

SCHEMA_SECTIONS = ("", "data", "model", "compile", "train", "train.callbacks", "distribution", "tracking", "sweep")
BLOCK_LISTS = ("model.layers",)  # lists shown one entry a line; every other list and deeper mapping on one line
COMMENT_COLUMN = 33


def config_reference(comments, source="run"):
    """A config file as cnnlab resolved it, every default written out, with `comments` ({config path: text}) beside
    its keys.

    source "run": the config.yaml the session's first run wrote (`cnnlab train configs/digits_cnn.yaml --epochs 5`);
    "sweep": the sweep section of the session's sweep folder's config.yaml, resolved by `cnnlab sweep`.
    Every key of a schema section must have a comment, and every comment a key, or generation stops."""
    import yaml

    runs_dir = lab().path / "runs"
    if source == "run":
        data = yaml.safe_load((runs_dir / "digits_cnn-20261201-090000" / "config.yaml").read_text())
    else:
        data = {"sweep": yaml.safe_load(next(runs_dir.glob("sweep-*/config.yaml")).read_text())["sweep"]}
    lines, paths = [], set()
    render_mapping(data, "", 0, comments, lines, paths)
    required = {path for path in paths if path.rpartition(".")[0] in SCHEMA_SECTIONS or "." not in path}
    uncommented = sorted(required - set(comments))
    if uncommented:
        raise RuntimeError(f"docs/gen.py: config keys without a comment in the reference: {', '.join(uncommented)}")
    stale = sorted(set(comments) - paths)
    if stale:
        raise RuntimeError(f"docs/gen.py: the reference comments on keys that cnnlab does not write: {', '.join(stale)}")
    out(fenced("\n".join(lines), "yaml"))


def render_mapping(mapping, prefix, indent, comments, lines, paths):
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths.add(path)
        head = " " * indent + f"{key}:"
        if isinstance(value, dict) and value and (path in SCHEMA_SECTIONS or path == "sweep.params"):
            lines.append(commented(head, comments.get(path)))
            render_mapping(value, path, indent + 2, comments, lines, paths)
        elif path in BLOCK_LISTS and isinstance(value, list):
            lines.append(commented(head, comments.get(path)))
            lines.extend(" " * (indent + 2) + "- " + list_entry(item) for item in value)
        else:
            lines.append(commented(f"{head} {flow(value)}", comments.get(path)))


def commented(line, comment):
    if not comment:
        return line
    return f"{line:<{COMMENT_COLUMN - 1}} # {comment}" if len(line) < COMMENT_COLUMN - 1 else f"{line}  # {comment}"


def list_entry(item):
    """`Conv2D: {filters: 32}` rather than `{Conv2D: {filters: 32}}`, as configs write a layer."""
    if isinstance(item, dict) and len(item) == 1:
        (key, value), = item.items()
        return f"{key}: {flow(value)}"
    return flow(item)


def flow(value):
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip().removesuffix("\n...").strip()


def callback_order(described):
    """The callbacks of a run in the order Keras calls them, made as `cnnlab train` makes them (every optional one
    on), then Keras' own; `described` ({class name: what it does}) must name each, or generation stops."""
    import keras

    from cnnlab.training import callbacks
    from cnnlab.config.experiment import load_config

    config = load_config(REPO / "configs" / "digits_cnn.yaml", ["train.callbacks.reduce_lr={monitor: val_loss}",
                                                                 "train.callbacks.tensorboard={}"])
    with tempfile.TemporaryDirectory() as folder:
        made = callbacks.make_callbacks(config, Path(folder), [])
        listed = keras.callbacks.CallbackList(made, add_history=True, add_progbar=True).callbacks
    names = [type(callback).__name__ for callback in listed]
    unknown = [name for name in names if name not in described]
    if unknown:
        raise RuntimeError(f"docs/gen.py: a run's callbacks include {', '.join(unknown)}, which the list does not describe")
    run_own = len(made)
    items = [f"{i}. `{name}`: {described[name]}" for i, name in enumerate(names[:run_own], 1)]
    items.append(f"{run_own + 1}. the callbacks of a sweep (reporting each epoch to Optuna) and of MLflow tracking, "
                 "where there are any")
    items += [f"{i}. `{name}`: {described[name]}" for i, name in enumerate(names[run_own:], run_own + 2)]
    out("\n".join(items) + "\n")


def first_docstring_line(path):
    import ast

    doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n")[0]


def module_list():
    """Every module of the cnnlab package with the first line of its docstring, read without importing it."""
    package = REPO / "cnnlab"
    rows = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == package:
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        rows.append(f"- `{name}`: {first_docstring_line(path) or '(no docstring)'}")
    out("\n".join(rows) + "\n")


def repository_layout(described):
    """The repository's top-level folders, each beside `described` (checked both ways against git's tracked files),
    and the bench scripts with the first line of their docstrings."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    folders = {name.split("/")[0] + "/" for name in tracked if "/" in name and not name.startswith(".")}
    links = sorted(name for name in tracked if "/" not in name and (REPO / name).is_symlink())
    undescribed, stale = sorted(folders - set(described)), sorted(set(described) - folders)
    if undescribed or stale:
        raise RuntimeError(f"docs/gen.py: the layout lacks {undescribed} and describes {stale}, against git ls-files")
    width = max(len(name) for name in described) + 2
    lines = [f"{name:<{width}}{text}" for name, text in described.items()]
    lines += [f"{name + '/':<{width}}a link to {os.readlink(REPO / name)}/, for the commands the manual shows" for name in links]
    bench = sorted(path for path in (REPO / "bench").glob("*.py"))
    bench_width = max(len(path.name) for path in bench) + 2
    lines += [f"  bench/{path.name:<{bench_width}}{first_docstring_line(path)}" for path in bench]
    out(fenced("\n".join(lines), "text"))


def export_io():
    """What each format the session exported takes and gives, as its export.json records it."""
    import json

    record = json.loads((lab().path / "runs" / "digits_cnn-20261201-090000" / "export" / "export.json").read_text())
    lines = []
    for name, entry in record["formats"].items():
        lines += [f'  "{name}": {{', f'    "input": {json.dumps(entry["input"])},', f'    "output": {json.dumps(entry["output"])}', "  },"]
    lines[-1] = "  }"
    out(fenced("\n".join(["{", *lines, "}"]), "json"))


def same_epochs(first, second, epochs):
    """Stops generation unless steps `first` and `second` printed the same figures for `epochs`: where a page says
    that they do (a resumed run against the uninterrupted one)."""
    def figures(name):
        lines = normalized(STEPS[name], lab().outputs[name]).split("\n")
        return {int(line.split()[1].split("/")[0]): lines[i + 1].split("ms/step", 1)[-1]
                for i, line in enumerate(lines) if line.startswith("Epoch ") and i + 1 < len(lines)}

    a, b = figures(first), figures(second)
    for epoch in epochs:
        if a.get(epoch) is None or a.get(epoch) != b.get(epoch):
            raise RuntimeError(f"docs/gen.py: epoch {epoch} of {first!r} and {second!r} differ: {a.get(epoch)} / {b.get(epoch)}")
