"""Segmenting images larger than memory, block by block, on dask (one machine or a cluster).

``predict_dask`` builds a lazy dask array of probabilities: each block of the output is one
task that fetches only the part of the input its tiles read (the block plus the network's
context, mirrored at the image border) and runs the same overlap-tile code as
:func:`napari_unet.predict.predict_probabilities`. Blocks start on the tile grid and the
normalisation statistics are computed once for the whole plane, so the result equals the
in-memory one exactly. Write it with ``da.to_zarr`` / ``tifffile`` to keep memory bounded.
For instance labels of planes larger than memory, label the written probabilities with
:func:`napari_unet.blockwise.label_blockwise` (block by block, ids merged across blocks), or
run the whole pipeline, input to OME-Zarr labels, with
:func:`napari_unet.distributed.segment_to_zarr` (resumable, on a ``dask.distributed`` cluster).

On one machine, torch already uses every core inside a task: run dask with few worker threads
(``dask.config.set(scheduler="synchronous")`` or ``num_workers=1``) to avoid oversubscription.
On a ``dask.distributed`` cluster, give each worker one thread and let torch use the cores.
"""

from __future__ import annotations

import numpy as np

from .inputs import as_planes
from .predict import Predictor
from .segmentation_model import SegmentationModel
from .tiling import Window

__all__ = ["predict_dask"]


def _predict_block(src: np.ndarray, y0: int, x0: int, full_shape, model, settings: dict, stats, region):
    pred = Predictor(model, **settings)
    return pred.plane(Window(np.asarray(src), y0, x0, full_shape), stats, region=region)


def predict_dask(
    image,
    model: SegmentationModel,
    *,
    block: int = 2048,
    channel_axis=None,
    device: str = "cpu",
    tile: int | None = None,
    precision: str = "auto",
    memory_budget: int | None = None,
):
    """Lazy class probabilities ``(n_classes, *stack, Y, X)`` (a dask array) for ``image``.

    Parameters
    ----------
    image : dask array or array-like (numpy, zarr, memmap)
        Same layouts as :func:`~napari_unet.predict.predict_probabilities`.
    block : int
        Approximate output block edge in pixels (rounded to whole tiles).
    device, tile, precision, memory_budget
        As for :func:`~napari_unet.predict.predict_probabilities`; every task uses them.

    Returns
    -------
    dask.array.Array
        float32, one block per group of whole tiles; each block reads only the input it
        needs (its tiles and their context), so the image never has to fit in memory.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from napari_unet import load_model
    >>> image = da.zeros((300, 500), dtype=np.uint16, chunks=256)
    >>> p = predict_dask(image, load_model("fluo-nuclei"), block=256)
    >>> p.shape, p.dtype
    ((3, 300, 500), dtype('float32'))
    >>> p[:, :8, :8].compute().shape
    (3, 8, 8)
    """
    import dask
    import dask.array as da

    arr = image if isinstance(image, da.Array) else da.from_array(image, chunks="auto")
    planes, lead = as_planes(arr, model.in_channels, channel_axis)
    P, C, H, W = planes.shape
    plan = Predictor.for_plane(model, (H, W), device=device, tile=tile, precision=precision,
                               memory_budget=memory_budget)
    # every task uses exactly the planned tiles (a worker's own memory budget could differ)
    settings = dict(plan=plan.plan, device=device, precision=plan.precision)
    step = plan.grid((H, W)).step
    by = max(1, round(block / step[0])) * step[0]
    bx = max(1, round(block / step[1])) * step[1]
    K = model.config.n_classes
    model_node = dask.delayed(model, traverse=False)
    task = dask.delayed(_predict_block, pure=True)
    out_planes = []
    for p in range(P):
        plane = planes[p]
        stats = model.normalization.stats(plane)
        rows = []
        for y0 in range(0, H, by):
            row = []
            for x0 in range(0, W, bx):
                region = (y0, min(H, y0 + by), x0, min(W, x0 + bx))
                (ra, rb), (ca, cb) = plan.grid((H, W), region).input_rows_cols()
                src = plane[:, ra:rb, ca:cb]
                d = task(src, ra, ca, (C, H, W), model_node, settings, stats, region)
                row.append(da.from_delayed(d, shape=(K, region[1] - y0, region[3] - x0), dtype=np.float32))
            rows.append(row)
        out_planes.append(da.block(rows))
    out = da.stack(out_planes, axis=1)  # (K, P, H, W)
    return out.reshape((K,) + tuple(lead) + (H, W))
