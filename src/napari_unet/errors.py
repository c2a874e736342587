"""The engine's own error for unusable input, and how any error becomes one line for the user."""

from __future__ import annotations

__all__ = ["InputError", "first_line"]


class InputError(ValueError):
    """An image or setting that cannot be used as given; the message says what to do."""


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none),
    for one-line messages that never show a traceback.

    >>> first_line(ValueError("bad tile\nmore detail"))
    'bad tile'
    >>> first_line(KeyError())
    'KeyError'
    """
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""
