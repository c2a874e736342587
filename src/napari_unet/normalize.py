"""Input normalisation, stored with the model so that every call normalises the same way.

``percentile``: per image (or plane), map the ``low``-th percentile to 0 and the ``high``-th
to 1 (robust to uint8/uint16 and to exposure, the usual choice for fluorescence).
``fixed``: ``(x - offset) / scale`` with constants learnt from the training data.
Statistics are computed over the whole image, never per tile, so tiling does not change them.

Non-finite pixels (NaN, inf: missing data in float images) are left out of the statistics and
filled with the offset before normalisation, so they read as the image's dark level (0 after
normalisation) instead of turning every output NaN; :func:`count_nonfinite` counts them for
the warning that the callers give.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Normalization", "count_nonfinite"]

_MAX_SAMPLES = 4_000_000  # percentiles on a regular subsample above this many pixels


def count_nonfinite(image, chunk: int = 2**24) -> int:
    """Number of NaN or infinite pixels in ``image`` (0 for integer images), counted plane by
    plane (a dask or zarr array is read one plane at a time) and in chunks, so that no
    image-sized mask is allocated."""
    dtype = np.dtype(getattr(image, "dtype", np.float64))
    if not np.issubdtype(dtype, np.floating) and not np.issubdtype(dtype, np.complexfloating):
        return 0
    if len(getattr(image, "shape", ())) > 3:
        return sum(count_nonfinite(image[i], chunk) for i in range(image.shape[0]))
    flat = np.asarray(image).reshape(-1)
    return int(sum(flat[i : i + chunk].size - np.count_nonzero(np.isfinite(flat[i : i + chunk]))
                   for i in range(0, flat.size, chunk)))


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
    def from_dict(cls, d: dict) -> Normalization:
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
            with np.errstate(over="ignore"):
                plane = np.asarray(image[i, ::step, ::step], dtype=np.float32)
            if not np.isfinite(plane).all():
                plane = plane[np.isfinite(plane)]  # missing pixels do not count
                if not plane.size:
                    out[i] = (0.0, 1.0)
                    continue
            lo, hi = np.percentile(plane, (self.low, self.high))
            scale = hi - lo
            if not np.isfinite(scale) or scale <= 0:
                # flat image: centre it, do not blow up noise
                scale = max(float(np.abs(hi)), 1.0)
            out[i] = (lo, scale)
        return out

    @staticmethod
    def apply(tile: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """Normalise a ``(C, h, w)`` tile with the whole image's ``stats``; float32. Non-finite
        pixels (and values beyond float32) become 0, the normalised offset."""
        off = stats[:, 0].astype(np.float32)[:, None, None]
        sc = stats[:, 1].astype(np.float32)[:, None, None]
        with np.errstate(invalid="ignore", over="ignore"):
            out = (np.asarray(tile, dtype=np.float32) - off) / sc
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = 0.0
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalise a whole ``(C, H, W)`` image."""
        return self.apply(image, self.stats(image))
