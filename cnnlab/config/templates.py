"""The shipped configs, as package data: `cnnlab init` copies one out, so a wheel needs no clone of the repository.

They live in cnnlab/templates/ (the repository's configs/ is a link to that folder), one YAML
file per template; a template's description is the first line of its leading comment.
"""

from importlib import resources
from pathlib import Path

from cnnlab.errors import CnnlabError, suggest

DEFAULT = "digits_cnn"


def templates_folder():
    return resources.files("cnnlab") / "templates"


def template_names():
    return sorted(entry.name[:-len(".yaml")] for entry in templates_folder().iterdir() if entry.name.endswith(".yaml"))


def template_text(name):
    """A template's YAML text; an unknown name lists the templates there are."""
    names = template_names()
    if name not in names:
        raise CnnlabError(f"no template named {name!r}{suggest(name, names)}; cnnlab init --list shows them: {', '.join(names)}")
    return (templates_folder() / f"{name}.yaml").read_text(encoding="utf-8")


def describe(text):
    """The first line of a template's leading comment: what it is, in one line."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.strip("# ").strip():
            return line.lstrip("#").strip()
    return ""


def list_templates():
    """(name, one-line description) of every template, by name."""
    return [(name, describe(template_text(name))) for name in template_names()]


def write_template(name, path=None, force=False):
    """Writes template `name` to `path` (default `<name>.yaml` here) and returns the path; an existing file is kept unless `force`."""
    text = template_text(name)
    path = Path(path) if path is not None else Path(f"{name}.yaml")
    if path.is_dir():
        path = path / f"{name}.yaml"
    if path.exists() and not force:
        raise CnnlabError(f"{path} already exists; give another PATH, or --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path
