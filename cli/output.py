"""Everything the CLI prints goes through here: JSON documents, text, errors, progress.

What a document's text says is `text.py`'s and `pictures.py`'s; this module
only decides where and how it is written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson


def dumps(document: Any, *, pretty: bool = False) -> str:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(document, option=option | orjson.OPT_NON_STR_KEYS).decode()


# What stored text must not send to a terminal: C0 and C1 controls (bar tab),
# DEL, line and paragraph separators, and the bidirectional formatting
# characters that reorder what is shown (Trojan Source).
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(line: str) -> str:
    """A line of text output as it may reach a terminal: unsafe characters escaped."""
    return _UNSAFE.sub(_escaped, line)


def lines(text: Iterable[str]) -> None:
    """Print text output, line by line, escaped (JSON is printed as it is)."""
    for line in text:
        click.echo(printable(line))


def emit(json_mode: bool, document: Any, text: Callable[[Any], Iterable[str]]) -> None:
    """Print a command's answer: the JSON document, or its text rendering."""
    if json_mode:
        click.echo(dumps(document, pretty=True))
    else:
        lines(text(document))


def emit_error(json_mode: bool, code: str, message: str) -> None:
    """One line on stderr; with --json also the error document on stdout."""
    line = " ".join(message.split())
    click.echo(f"error: {printable(line)}", err=True)
    if json_mode:
        click.echo(dumps({"error": {"code": code, "message": line}}, pretty=True))


def note(message: str) -> None:
    click.echo(printable(message), err=True)


ID_KEYS = frozenset({"trainRunId", "checkpointId", "checkpointIds", "aggregateId"})
"""Where a document holds run and checkpoint ids (tables show them short)."""


def ids_in(document: Any) -> list[str]:
    """Every run and checkpoint id in a document, at any depth."""
    found: list[str] = []

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif key in ID_KEYS and isinstance(value, str):
            found.append(value)

    walk(document, None)
    return found


def with_ids(document: Any, replacements: dict[str, str], key: str | None = None) -> Any:
    """A copy of the document with its run and checkpoint ids replaced (e.g. short ones)."""
    if isinstance(document, dict):
        return {k: with_ids(v, replacements, k) for k, v in document.items()}
    if isinstance(document, list):
        return [with_ids(item, replacements, key) for item in document]
    if key in ID_KEYS and isinstance(document, str):
        return replacements.get(document, document)
    return document


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
