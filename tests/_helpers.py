"""Shared test helpers: tiny models and the optional real data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_unet.model import UNetConfig
from napari_unet.modelfile import SegmentationModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")


def tiny_model(seed: int = 0, **cfg) -> SegmentationModel:
    """A small, fast U-Net (base 4, 3 levels) with deterministic weights."""
    torch.manual_seed(seed)
    kw = dict(base_channels=4, depth=3, dropout=0.0)
    kw.update(cfg)
    return SegmentationModel.new(UNetConfig(**kw), name="tiny", description="test model")


def simulated_strokes(instances, n_cells: int = 12, seed: int = 0):
    """What a biologist paints in a minute, from a ground-truth instance image (0 = background):
    the inside of ``n_cells`` random cells (label 2, 3, ...) and a background ring around each
    (label 1); everything else stays 0 (not annotated)."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    chosen = rng.choice(ids, size=min(n_cells, ids.size), replace=False)
    lab = np.zeros(instances.shape, np.uint16)
    cells = instances > 0
    for k, i in enumerate(chosen):
        obj = instances == i
        lab[ndi.binary_erosion(obj, iterations=1)] = k + 2
        ring = ndi.binary_dilation(obj, iterations=6) & ~ndi.binary_dilation(cells, iterations=1)
        lab[ring] = 1
    return lab


class CountingArray:
    """A read-only array that records every block read from it (``reads``: ``(rows, cols)``
    slices of the last two axes), to check what a lazy or tiled computation fetches."""

    def __init__(self, data):
        import numpy as np

        self.data = np.asarray(data)
        self.shape, self.dtype, self.ndim = self.data.shape, self.data.dtype, self.data.ndim
        self.reads: list[tuple[range, range]] = []

    def __getitem__(self, key):
        out = self.data[key]
        if out.size:
            key = key if isinstance(key, tuple) else (key,)
            key = key + (slice(None),) * (self.ndim - len(key))
            rows, cols = (range(*k.indices(n)) if isinstance(k, slice) else range(k, k + 1)
                          for k, n in zip(key[-2:], self.shape[-2:]))
            self.reads.append((rows, cols))
        return out

    def __setitem__(self, key, value):
        raise AssertionError("the source image was written to")

    def read_mask(self):
        """Which pixels of the last two axes were read at least once."""
        import numpy as np

        mask = np.zeros(self.shape[-2:], bool)
        for rows, cols in self.reads:
            mask[rows.start:rows.stop:rows.step, cols.start:cols.stop:cols.step] = True
        return mask


def blobs(shape=(96, 96), centres=None, radius=None, *, n: int = 12, background: float = 0.1, noise: float = 0.05,
          brightness: float = 0.8, seed: int = 0):
    """A synthetic fluorescence-like image (float32) of bright disks on a noisy background, and
    its instance labels (int32, one id per disk, 1, 2, ...; where disks overlap the first keeps
    the pixel). ``centres`` (with one ``radius``) places the disks; without them ``n`` disks get
    random centres (8 px from the border) and radii (4 to 7 px). The one generator of the tests."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image = rng.normal(background, noise, shape)
    if centres is None:
        disks = []
        for _ in range(n):
            cy, cx = rng.integers(8, min(shape) - 8, 2)
            disks.append((int(cy), int(cx), int(rng.integers(4, 8))))
    else:
        disks = [(cy, cx, radius) for cy, cx in centres]
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for k, (cy, cx, r) in enumerate(disks):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        inst[disk & (inst == 0)] = k + 1
        image[disk] += brightness
    return image.astype(np.float32), inst
