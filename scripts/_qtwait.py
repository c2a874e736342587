"""Waiting in a script that drives a real napari window: the one event-loop wait of scripts/."""

from __future__ import annotations

import time


def wait(predicate, timeout: float = 900.0, settle: int = 20) -> None:
    """Process Qt events until ``predicate()`` is true (TimeoutError after ``timeout`` seconds),
    then ``settle`` more rounds so that what it triggered is drawn."""
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not predicate():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("gave up waiting")
    for _ in range(settle):
        QApplication.processEvents()
        time.sleep(0.01)
