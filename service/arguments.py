"""Checks of the Python API's arguments: bad input is a `ValidationError`, never a crash.

The CLI hands over what click parsed; a caller of the Python API may hand
over anything. Each public method of the ledger checks the kinds of its
arguments here, before any rule or store sees them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from trainledger.domain.errors import ValidationError

T = TypeVar("T")

LARGEST_POSITION = 2**63 - 1
"""Log positions and limits are 64-bit integers in every store."""


def require(value: Any, kind: type[T] | tuple[type[Any], ...], name: str) -> T:
    """`value` itself when it is of `kind` (booleans are never numbers here)."""
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        kinds = (kind,) if isinstance(kind, type) else kind
        expected = " or ".join(k.__name__ for k in kinds)
        raise ValidationError(f"{name} must be a {expected}, not {type(value).__name__}")
    checked: T = value
    return checked


def optional(value: Any, kind: type[T] | tuple[type[Any], ...], name: str) -> T | None:
    return None if value is None else require(value, kind, name)


def whole(value: Any, name: str, *, low: int = 0, high: int = LARGEST_POSITION) -> int:
    """An integer in [low, high]."""
    number: int = require(value, int, name)
    if not low <= number <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, not {number}")
    return number


def moment(value: Any, name: str = "as_of") -> datetime | None:
    return optional(value, datetime, name)
