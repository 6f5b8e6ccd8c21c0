"""The one rule for text the ledger records: printable Unicode, tab and newline allowed.

NUL and the other C0 control characters (everything below U+0020 but tab,
newline and a carriage return ending a line) and lone surrogates are
refused in every text field, whichever way it arrives (CLI, Python API,
trainer result, eval file): PostgreSQL cannot store NUL at all, a lone
surrogate is not UTF-8, and the others rewrite a terminal that prints them.
Checked where text enters: the contract models (a `ValueError`, so the
caller's usual handling of an invalid document applies), a trainer result's
storability (`trainer_outcome`), and every new event (`ControlCharacterError`).

Not checked again when the ledger reads back what it stored (`READ_BACK`):
an event in the log passed this rule when it was created, and its hash chain
(`verify`) is what says whether it is still what was written. An import file
is input, not read back: its events are checked as before.
"""

from __future__ import annotations

import re
from typing import Any

from trainledger.domain.errors import ControlCharacterError

READ_BACK: dict[str, Any] = {"trainledger_read_back": True}
"""The validation context of an event read back from the ledger's own store
(`DomainEvent.read_back`): the contract models inside it skip this rule."""


def is_read_back(context: Any) -> bool:
    """Whether a validation context is `READ_BACK` (the rule then does not apply)."""
    return isinstance(context, dict) and context.get("trainledger_read_back") is True


# A carriage return only as the start of a Windows line end.
_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]|\r(?!\n)")


def text_problem(value: Any, where: str = "") -> str | None:
    """What is wrong with the first refused character in a JSON-like value, or None.

    Named as "`where` holds ..." (`where` is a dotted path to the value).
    """
    texts: list[str] = []
    _gather(value, texts)
    # One search over all the text (joined by a space, which the rule allows and which
    # cannot complete a Windows line end); the path is worked out only for a refusal.
    if _REFUSED.search(" ".join(texts)) is None:
        return None
    return _first_problem(value, where)


def _gather(value: Any, texts: list[str]) -> None:
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                texts.append(key)
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict | list | tuple):
                _gather(item, texts)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str):
                texts.append(item)
            elif isinstance(item, dict | list | tuple):
                _gather(item, texts)


def _first_problem(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        found = _REFUSED.search(value)
        if found is None:
            return None
        character = found.group()[0]
        code = f"U+{ord(character):04X}"
        if "\ud800" <= character <= "\udfff":
            return f"{where or 'text'} is not valid Unicode text (a lone surrogate, {code})"
        return f"{where or 'text'} holds a control character ({code}), which is never recorded"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _first_problem(key, f"a key of {where}" if where else "a key")
            if problem is None:
                problem = _first_problem(item, _join(where, str(key)))
            if problem is not None:
                return problem
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _first_problem(item, f"{where}[{index}]")
            if problem is not None:
                return problem
    return None


def printable(text: str) -> str:
    """`text` with every character the rule refuses replaced by U+FFFD.

    For text the ledger writes itself from what it did not choose (a
    trainer's stderr in a failure reason), where refusing would lose the rest.
    """
    return _REFUSED.sub("\ufffd", text)


# In JSON text a refused character can only be escaped: a writer escapes every C0
# character (`\u0000`-`\u001f`, or `\b` `\f` `\r`), and a lone surrogate is no
# UTF-8 (written escaped, or not at all). None of these escapes: nothing refused.
# One of them (or a written backslash `\\` before such a letter, or a Windows
# line end) is only a reason to look at the values themselves. So is U+FFFD:
# pydantic's JSON mode writes a lone surrogate in a dict's key as replacement
# characters instead of failing.
_MAYBE_REFUSED_IN_JSON = re.compile(rb"\\(?:u00[01]|u[dD][89abAB]|[bfr])|\xef\xbf\xbd")


def may_hold_refused(written: bytes) -> bool:
    """Whether a new event's written state (pydantic's JSON mode, then a canonical JSON
    writer: `domain.chain`) might hold a character the rule refuses: False means its
    values hold none; True asks for `text_problem` on the values themselves.

    One search in C over bytes the event's seal writes anyway, instead of a walk of
    the values in Python (bench/README.md: ~2 % of a command's CPU).
    """
    return _MAYBE_REFUSED_IN_JSON.search(written) is not None


def refuse_control_characters(value: Any, where: str = "") -> None:
    """Raise `ControlCharacterError` when `value` holds text the ledger never records."""
    problem = text_problem(value, where)
    if problem is not None:
        raise ControlCharacterError(problem)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
