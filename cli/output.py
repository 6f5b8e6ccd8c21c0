"""Everything the CLI prints goes through here: JSON documents, text, errors, progress.

What a document's text says is `text.py`'s and `pictures.py`'s; this module
only decides where and how it is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson


def dumps(document: Any, *, pretty: bool = False) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(document, option=option | orjson.OPT_NON_STR_KEYS).decode()


def emit(json_mode: bool, document: Any, text: Callable[[Any], Iterable[str]]) -> None:
    """Print a command's answer: the JSON document, or its text rendering."""
    if json_mode:
        click.echo(dumps(document, pretty=True))
    else:
        for line in text(document):
            click.echo(line)


def emit_error(json_mode: bool, code: str, message: str) -> None:
    """One line on stderr; with --json also the error document on stdout."""
    line = " ".join(message.split())
    click.echo(f"error: {line}", err=True)
    if json_mode:
        click.echo(dumps({"error": {"code": code, "message": line}}, pretty=True))


def note(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def progress(json_mode: bool, label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, shown only on a terminal and without --json.

    Yields a `report(done, total)` callback for long operations.
    """
    if json_mode or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        shown = 0

        def report(done: int, total: int) -> None:
            nonlocal shown
            bar.length = max(total, done, 1)
            bar.update(done - shown)
            shown = done

        yield report


def write_json_line(document: Any) -> None:
    sys.stdout.write(dumps(document) + "\n")
