"""One family of exceptions, so the CLI can turn every expected failure into one clean line, and the helpers that word them."""

import difflib
import traceback
from collections import Counter


class CnnlabError(Exception):
    """A failure the user can fix; the CLI prints it as one line and exits with code 2."""

    exit_code = 2


class ConfigError(CnnlabError):
    """A config value is wrong; carries the dotted path so the user knows which line to edit."""

    def __init__(self, path, message, source=None):
        self.path = path
        self.message = message
        self.source = source
        super().__init__(str(self))

    def with_source(self, source):
        """Returns the same error naming the YAML file, added where the file name is known.

        It keeps the original's cause and frames, so that --debug still shows the library error behind it.
        """
        named = ConfigError(self.path, self.message, source=source)
        named.__cause__ = self.__cause__
        return named.with_traceback(self.__traceback__)

    def __str__(self):
        where = f"{self.path}: " if self.path else ""
        prefix = f"{self.source}: " if self.source else ""
        return one_line(f"{prefix}{where}{self.message}")


def first_line(exc):
    """A library's error by its first non-blank line, as one line: TensorFlow, TFLite and SQLAlchemy add pages of context."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0]) if lines else type(exc).__name__


def format_traceback(exc):
    """The whole traceback of `exc` with the errors it was raised from: what --debug and a failed trial's failure.txt show."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def most_common(reasons):
    """(reason, count) of the reason most failures share, the first seen on a tie; (None, 0) for none.

    Named in the one line that ends a sweep or comparison whose runs failed, so that it says what to fix first.
    """
    counts = Counter(reason for reason in reasons if reason)
    if not counts:
        return None, 0
    return counts.most_common(1)[0]


def one_line(message):
    """An error's text as one line, whatever a hostile config or a library's multi-line message put into it.

    Control characters (a newline, a terminal escape) become spaces and runs of spaces one,
    so a message can neither break the one-line promise nor move the cursor; an exception
    with no text of its own (KeyError()) is named by its type rather than printed as nothing.
    """
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(message)).split())
    return type(message).__name__ if not text and isinstance(message, BaseException) else text


class DataError(CnnlabError):
    """A dataset or image file is missing, unreadable or of the wrong kind."""


class RunError(CnnlabError):
    """A run folder cannot be created, read or written."""


class ExportError(CnnlabError):
    """A model cannot be exported in a format, or its exported file does not predict what best.keras does."""


class TrackingError(CnnlabError):
    """MLflow could not be reached or written; the run folder itself is complete, and `cnnlab track` logs it later."""


class TrainingInterrupted(CnnlabError):
    """Training stopped on Ctrl-C or SIGTERM; the run folder is marked interrupted."""

    exit_code = 130


def closest(value, choices):
    """The choice nearest to `value` by difflib's measure, or None where none is near."""
    if not isinstance(value, str):
        return None
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(value, choices):
    """` (did you mean X?)` for a near miss, else nothing."""
    return did_you_mean(closest(value, choices))


def did_you_mean(match):
    """The one wording of a hint, for callers that find the match their own way (a key path, say)."""
    return f" (did you mean {match}?)" if match else ""


def type_name(value):
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def short_repr(value, limit=60):
    """A value as repr writes it, cut to `limit` characters, on one line: error messages stay short whatever the user wrote.

    The text is built piece by piece and no further than the limit, so a value whose whole
    repr would be gigabytes (a list that holds itself, or the same list a billion times over)
    costs no more than a short one, and an int too long for Python to print is named, not printed.
    """
    pieces, length, cut = [], 0, False
    for piece in repr_pieces(value, limit):
        pieces.append(piece)
        length += len(piece)
        if length > limit:
            cut = True
            break
    text = " ".join("".join(pieces).split())
    return text if len(text) <= limit and not cut else text[: limit - 3] + "..."


def repr_pieces(value, limit):
    """repr(value) as a stream of short pieces, containers opened one item at a time."""
    if isinstance(value, (list, tuple, dict, set, frozenset)) and type(value) in CONTAINER_BRACKETS and value:
        opening, closing = CONTAINER_BRACKETS[type(value)]
        yield opening
        for i, item in enumerate(value.items() if isinstance(value, dict) else value):
            if i:
                yield ", "
            if isinstance(value, dict):
                yield from repr_pieces(item[0], limit)
                yield ": "
                item = item[1]
            yield from repr_pieces(item, limit)
        yield "," + closing if type(value) is tuple and len(value) == 1 else closing
    elif isinstance(value, (str, bytes)):
        yield repr(value[: limit + 1])
    else:
        try:
            yield repr(value)
        except ValueError:  # an int of more than 4,300 digits (sys.get_int_max_str_digits)
            yield f"<{type_name(value)} too long to print>"


CONTAINER_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}"), set: ("{", "}"), frozenset: ("frozenset({", "})")}
