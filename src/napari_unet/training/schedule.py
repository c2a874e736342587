"""The learning rate at each iteration."""

from __future__ import annotations

import math

__all__ = ["LearningRateSchedule"]


class LearningRateSchedule:
    """``kind="constant"``: ``learning_rate`` throughout. ``kind="cosine"``: a linear warm-up
    over the first ``min(20, iterations // 10)`` iterations up to ``learning_rate``, then a
    cosine decay to 5 % of it at the last iteration. Call with the iteration (0-based)."""

    def __init__(self, learning_rate: float, iterations: int, kind: str = "cosine"):
        if kind not in ("cosine", "constant"):
            raise ValueError("lr_schedule must be 'cosine' or 'constant'")
        self.learning_rate, self.iterations, self.kind = learning_rate, iterations, kind
        self.warmup = min(20, iterations // 10)

    @classmethod
    def from_config(cls, cfg) -> LearningRateSchedule:
        """The schedule of a :class:`~napari_unet.train.TrainingConfig`."""
        return cls(cfg.learning_rate, cfg.iterations, cfg.lr_schedule)

    def __call__(self, iteration: int) -> float:
        if self.kind == "constant":
            return self.learning_rate
        if iteration < self.warmup:
            return self.learning_rate * (iteration + 1) / self.warmup
        frac = (iteration - self.warmup) / max(1, self.iterations - self.warmup)
        return self.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
