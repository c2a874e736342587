"""One-line messages for people: the first line of an exception, for the CLI, the widgets and
the core's own error messages (bad input -> one line, never a traceback)."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, or its type name when it has none.

    >>> first_line(ValueError("bad tile\\nmore detail"))
    'bad tile'
    >>> first_line(KeyError())
    'KeyError'
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
