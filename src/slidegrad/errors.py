"""Errors raised for bad input.

Every error carries one line that names the offending file or field and says
what was expected; scripts and the workflow print that line and exit non-zero,
never a bare traceback.  The helpers below build such lines.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence


class SlidegradError(Exception):
    """Base class: a one-line, user-facing message."""


class InputError(SlidegradError, ValueError):
    """A file, field or argument is not what slidegrad expected."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)


def quote(value: object) -> str:
    """``'value'`` on one line (repr() if it holds control characters)."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return repr(text)
    return f"'{text}'"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception message, shortened, never empty."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line:
        line = type(exc).__name__
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def is_int(value: object) -> bool:
    """An integer, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def listed(items: Sequence[Any], limit: int = 8) -> str:
    """``a, b, c`` — at most ``limit`` items, then how many there are in all."""
    shown = ", ".join(map(str, items[:limit]))
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"


def nonfinite_tiles(model: object, what: str, slide: str, tiles: Sequence[str]) -> InputError:
    """The one line for NaN/inf model results in a workflow job: ``what`` (e.g. ``outputs are``) per tile."""
    return InputError(f"model '{model}': {what} NaN or inf on slide '{slide}', tile(s) {listed(tiles)}")
