"""Errors raised for bad input.

Every error carries one line that names the offending file or field and says
what was expected; scripts and the workflow print that line and exit non-zero,
never a bare traceback.
"""


class SlidegradError(Exception):
    """Base class: a one-line, user-facing message."""


class InputError(SlidegradError, ValueError):
    """A file, field or argument is not what slidegrad expected."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise InputError(message)
