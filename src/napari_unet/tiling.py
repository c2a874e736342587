"""Overlap-tile prediction over any 2D array with any callable (the paper's strategy).

The tiler knows two things about the callable: its input tile shape and the context
``margin`` it consumes on each side (its output is ``tile - 2 * margin`` per axis). Each output
tile is computed from its full context; beyond the image border the context is the mirror
image of the border region. Tiles start on multiples of ``align`` (2 ** poolings for a U-Net),
so that max-pool windows fall where they would in one pass over the whole image: the stitched
result equals that single pass exactly, with no seams.

Tiles are read one at a time from the source array (numpy, memmap, zarr or dask), mirrored
on the fly, so memory holds the output and a batch of tiles, never a padded copy of the image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["Cancelled", "TileGrid", "Window", "check_cancel", "is_cancelled", "predict_tiled", "reflect_index",
           "read_mirrored"]


class Cancelled(Exception):
    """Raised inside a long computation when its cancel flag is set."""


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices (possibly outside ``[0, n)``) into it by mirroring without repeating the
    edge pixel (``-1 -> 1``, ``n -> n - 2``); works for pads larger than ``n``."""
    idx = np.asarray(idx)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    i = np.mod(idx, period)
    return np.where(i >= n, period - i, i)


def read_mirrored(image, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """The ``(C, h, w)`` window of ``image`` (``(C, H, W)``) at ``(y0, x0)``, mirrored outside;
    float32. Only the bounding block inside the image is read from ``image``."""
    H, W = image.shape[-2:]
    ys = reflect_index(np.arange(y0, y0 + h), H)
    xs = reflect_index(np.arange(x0, x0 + w), W)
    ya, yb = int(ys.min()), int(ys.max()) + 1
    xa, xb = int(xs.min()), int(xs.max()) + 1
    block = np.asarray(image[:, ya:yb, xa:xb], dtype=np.float32)
    if ya == y0 and xa == x0 and yb - ya == h and xb - xa == w:
        return block
    return block[:, ys - ya][:, :, xs - xa]


class TileGrid:
    """Output tile origins covering an ``H x W`` image with steps that are multiples of ``align``."""

    def __init__(self, shape: Sequence[int], tile: Sequence[int], margin: int, align: int = 1,
                 region: Sequence[int] | None = None):
        self.H, self.W = (int(s) for s in shape)
        self.tile = (int(tile[0]), int(tile[1]))
        self.margin = int(margin)
        out = [t - 2 * self.margin for t in self.tile]
        if min(out) <= 0:
            raise ValueError(f"tile {self.tile} leaves no output after a margin of {margin}")
        # largest multiple of align that fits in the output tile; the few pixels beyond it are
        # recomputed by the next tile (keeps every tile on the pooling grid)
        self.step = tuple(max(align, (o // align) * align) if o >= align else o for o in out)
        if any(s > o for s, o in zip(self.step, out)):
            raise ValueError(f"output tile {out} smaller than the alignment {align}")
        y0, y1, x0, x1 = region if region is not None else (0, self.H, 0, self.W)
        if y0 % self.step[0] or x0 % self.step[1]:
            raise ValueError(f"a region must start on the tile grid (multiples of {self.step})")
        self.region = (int(y0), int(min(y1, self.H)), int(x0), int(min(x1, self.W)))
        self.ys = list(range(self.region[0], self.region[1], self.step[0]))
        self.xs = list(range(self.region[2], self.region[3], self.step[1]))

    def input_rows_cols(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The ``[start, stop)`` rows and columns of the image that the tiles of this grid read
        (after mirroring), so that a block of a larger image can be fetched once."""
        th, tw = self.tile
        rows = reflect_index(np.arange(self.ys[0] - self.margin, self.ys[-1] - self.margin + th), self.H)
        cols = reflect_index(np.arange(self.xs[0] - self.margin, self.xs[-1] - self.margin + tw), self.W)
        return (int(rows.min()), int(rows.max()) + 1), (int(cols.min()), int(cols.max()) + 1)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def __iter__(self):
        for y in self.ys:
            for x in self.xs:
                yield y, x


def is_cancelled(cancel) -> bool:
    """Whether ``cancel`` (None, a ``threading.Event`` or a callable returning a bool) is set."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def check_cancel(cancel) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set (see :func:`is_cancelled`)."""
    if is_cancelled(cancel):
        raise Cancelled("cancelled")


def predict_tiled(
    image,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int | Sequence[int],
    margin: int,
    out_channels: int,
    align: int = 1,
    batch_size: int = 1,
    out: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    cancel=None,
    region: Sequence[int] | None = None,
) -> np.ndarray:
    """Apply ``fn`` tile by tile over ``image`` and stitch the results.

    Parameters
    ----------
    image : array-like, shape (C, H, W)
        Any array that supports slicing (numpy, memmap, zarr, dask).
    fn : callable
        Maps a float32 batch ``(B, C, th, tw)`` to ``(B, out_channels, th - 2*margin, tw - 2*margin)``.
    tile : int or (int, int)
        Input tile shape ``(th, tw)`` that ``fn`` accepts.
    margin : int
        Context consumed by ``fn`` on each side.
    align : int
        Tile origins are multiples of this (``2**poolings`` for a valid U-Net).
    batch_size : int
        Tiles per call of ``fn``.
    out : array, optional
        Preallocated ``(out_channels, H, W)`` output (e.g. a memmap for very large images).
    progress : callable, optional
        Called with the number of tiles just finished.
    cancel : threading.Event or callable, optional
        Checked before every batch; when set, :class:`Cancelled` is raised.
    region : (y0, y1, x0, x1), optional
        Compute only this part of the output (its origin on the tile grid); used to split a
        large image into blocks (see :mod:`napari_unet.dask_predict`).

    Returns
    -------
    out : ndarray, shape (out_channels, H, W) or the region's shape, float32
    """
    if len(image.shape) != 3:
        raise ValueError(f"predict_tiled expects a (C, H, W) array, got shape {tuple(image.shape)}")
    tile = (tile, tile) if np.isscalar(tile) else tuple(tile)
    _, H, W = image.shape
    grid = TileGrid((H, W), tile, margin, align, region)
    ry0, ry1, rx0, rx1 = grid.region
    shape = (out_channels, ry1 - ry0, rx1 - rx0)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    batch: list[np.ndarray] = []
    where: list[tuple[int, int]] = []

    def flush():
        pred = fn(np.stack(batch))
        for p, (y, x) in zip(pred, where):
            h = min(grid.step[0], ry1 - y)
            w = min(grid.step[1], rx1 - x)
            out[:, y - ry0 : y - ry0 + h, x - rx0 : x - rx0 + w] = p[:, :h, :w]
        if progress is not None:
            progress(len(batch))
        batch.clear()
        where.clear()

    for y, x in grid:
        if not batch:
            check_cancel(cancel)
        batch.append(read_mirrored(image, y - margin, x - margin, tile[0], tile[1]))
        where.append((y, x))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return out


class Window:
    """A block of a larger ``(C, H, W)`` image that answers slices in the large image's
    coordinates (rows ``[y0, y0 + h)``, columns ``[x0, x0 + w)`` are held)."""

    def __init__(self, block: np.ndarray, y0: int, x0: int, full_shape: Sequence[int]):
        self.block = block
        self.y0, self.x0 = int(y0), int(x0)
        self.shape = (block.shape[0], int(full_shape[-2]), int(full_shape[-1]))
        self.dtype = block.dtype

    def __getitem__(self, key):
        c, ys, xs = key
        ya, yb = ys.start - self.y0, ys.stop - self.y0
        xa, xb = xs.start - self.x0, xs.stop - self.x0
        if ya < 0 or xa < 0 or yb > self.block.shape[1] or xb > self.block.shape[2]:
            raise IndexError("read outside the block held by this window")
        return self.block[c, ya:yb, xa:xb]
