"""Input normalisation, stored with the model so that every call normalises the same way.

``percentile``: per image (or plane), map the ``low``-th percentile to 0 and the ``high``-th
to 1 (robust to uint8/uint16 and to exposure, the usual choice for fluorescence).
``fixed``: ``(x - offset) / scale`` with constants learnt from the training data.
Statistics are computed over the whole image, never per tile, so tiling does not change them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Normalization"]

_MAX_SAMPLES = 4_000_000  # percentiles on a regular subsample above this many pixels


@dataclass(frozen=True)
class Normalization:
    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        if self.mode not in ("percentile", "fixed"):
            raise ValueError(f"normalisation mode must be 'percentile' or 'fixed', not {self.mode!r}")
        if self.mode == "percentile" and not 0 <= self.low < self.high <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.mode == "fixed" and self.scale == 0:
            raise ValueError("fixed normalisation needs a non-zero scale")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalization":
        return cls(**d)

    def stats(self, image) -> np.ndarray:
        """Per-channel ``(offset, scale)`` for ``image`` of shape ``(C, H, W)``; float64 ``(C, 2)``."""
        c = image.shape[0]
        out = np.empty((c, 2))
        if self.mode == "fixed":
            out[:] = (self.offset, self.scale)
            return out
        n = int(np.prod(image.shape[1:]))
        step = max(1, int(np.ceil(np.sqrt(n / _MAX_SAMPLES))))
        for i in range(c):
            plane = np.asarray(image[i, ::step, ::step], dtype=np.float32)
            lo, hi = np.percentile(plane, (self.low, self.high))
            scale = hi - lo
            if not np.isfinite(scale) or scale <= 0:
                # flat image: centre it, do not blow up noise
                scale = max(float(np.abs(hi)), 1.0)
            out[i] = (lo, scale)
        return out

    @staticmethod
    def apply(tile: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """Normalise a ``(C, h, w)`` tile with the whole image's ``stats``; float32."""
        t = np.asarray(tile, dtype=np.float32)
        off = stats[:, 0].astype(np.float32)[:, None, None]
        sc = stats[:, 1].astype(np.float32)[:, None, None]
        return (t - off) / sc

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise a whole ``(C, H, W)`` image."""
        return self.apply(image, self.stats(image))
