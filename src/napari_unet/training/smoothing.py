"""Loss smoothing, one home for both uses: picking the best model by training loss, and the
curve the napari widget draws."""

from __future__ import annotations

__all__ = ["smoothed", "BEST_MODEL_SMOOTHING", "CURVE_SMOOTHING"]

#: training without anything else to judge by: the best model is the one with the lowest loss so smoothed
BEST_MODEL_SMOOTHING = 0.95
#: the thick loss curve of the Fine-tune plot
CURVE_SMOOTHING = 0.9


def smoothed(previous: float | None, value: float, keep: float) -> float:
    """Exponential moving average: ``value`` when there is no ``previous``, else
    ``keep * previous + (1 - keep) * value``."""
    return value if previous is None else keep * previous + (1.0 - keep) * value
