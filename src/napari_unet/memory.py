"""Memory estimates made before allocating, so that a too-large job is refused with numbers
and a way out instead of swapping the machine to a halt or dying half-way.

The limit is the memory available now (``psutil``), or ``NAPARI_UNET_MEMORY_LIMIT`` (bytes,
or with a suffix: ``8G``, ``500M``) when set, e.g. on a shared machine or in a cluster job.
"""

from __future__ import annotations

import os

__all__ = ["NotEnoughMemory", "available_memory", "check_memory", "format_bytes"]


class NotEnoughMemory(MemoryError):
    """A job that would not fit in memory; the message gives the numbers and what to do."""


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _parse(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def available_memory() -> int:
    """Bytes that a new allocation can use without swapping (``NAPARI_UNET_MEMORY_LIMIT`` wins)."""
    env = os.environ.get("NAPARI_UNET_MEMORY_LIMIT")
    if env:
        try:
            return _parse(env)
        except ValueError:
            raise ValueError(f"NAPARI_UNET_MEMORY_LIMIT={env!r} is not a size (examples: 8G, 500M, 1000000)") from None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil missing or unsupported platform
        return 8 * 2**30


def check_memory(nbytes: float, what: str, way_out: str) -> None:
    """Raise :class:`NotEnoughMemory` if ``nbytes`` exceed the available memory: "``what``
    needs X, Y are available: ``way_out``"."""
    avail = available_memory()
    if nbytes > avail:
        raise NotEnoughMemory(f"{what} needs {format_bytes(nbytes)}, but {format_bytes(avail)} are available: {way_out}")
