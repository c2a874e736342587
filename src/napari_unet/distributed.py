"""Segmenting images larger than one machine: block by block, on a ``dask.distributed`` cluster
or in this process, from a zarr / OME-Zarr or tif to OME-Zarr labels (and probabilities).

:func:`segment_to_zarr` runs five phases, each a set of independent block tasks:

1. **statistics**: the normalisation statistics of the whole plane from a regular subsample of
   at most ``Normalization``'s 4 million pixels per channel (every ``s``-th row and column),
   gathered band by band: the same pixels the in-memory pass uses, so the figures are equal on
   any image up to 4 million pixels and within the subsample's error above (docs/large_images.md).
2. **probabilities**: each block (whole tiles of the overlap-tile grid) reads only the input
   its tiles need and runs the same code as the in-memory pass (equal to it exactly).
3. **labels**: each block is labelled from the probabilities with a halo of context and
   summarised for the merge (:mod:`napari_unet.blockwise`).
4. **merge** (in the main process, small): the graph of labels touching across block faces,
   its connected components, one relabel map per block, ``min_size`` on the merged objects.
5. **write**: the relabelled blocks and a 2x pyramid into the labels OME-Zarr.

Every finished block leaves a marker in a work folder beside the outputs; a rerun with the same
settings skips finished blocks (resume after an interruption). Outputs are built in the work
folder and moved into place when complete, so an interrupted run never leaves a half-written
``*_labels.zarr``. The main process holds no image data: only the subsample, the merge's face
strips and the relabel maps. A worker holds one block's input, probabilities and labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blockwise import (  # noqa: F401
    OUT_OF_CORE_PIXELS,
    BlockPlan,
    block_summary,
    default_halo,
    is_out_of_core,
    label_window,
    merge_blocks,
    postprocessing_params,
    uses_watershed,
)
from .errors import first_line
from .omezarr import (
    ImageSource,
    ZarrInputError,
    array_source,
    create_labels_zarr,
    create_probabilities_zarr,
    open_source,
    pyramid_shapes,
)
from .tiling import Cancelled, is_cancelled

__all__ = ["ClusterError", "LargeSegmentation", "connect", "segment_to_zarr", "output_paths", "is_out_of_core",
           "segment_layer_data"]

LABEL_CHUNK = 1024


class ClusterError(RuntimeError):
    """The dask cluster cannot be reached or started; the message says what to do."""


@dataclass
class LargeSegmentation:
    """Result of :func:`segment_to_zarr`."""

    labels: Path
    probabilities: Path | None
    n_objects: int
    shape: tuple[int, int]
    seconds: float
    resumed_blocks: int


# --------------------------------------------------------------------------- cluster


def connect(workers: int | None = None, scheduler: str | None = None, *, timeout: float = 10.0,
            memory_limit="auto"):
    """A ``distributed.Client``: to the scheduler at ``scheduler`` (``tcp://host:8786``), or to
    a new local cluster of ``workers`` processes with one thread each (torch uses the cores:
    each worker gets ``cores // workers`` torch threads, see :func:`segment_to_zarr`)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - extra not installed
        raise ClusterError("dask.distributed is not installed: pip install 'napari-unet[dask]'") from None
    import logging

    if scheduler:
        try:
            return Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterError(f"cannot reach the dask scheduler at {scheduler} ({first_line(e)}); check the address "
                               f"(e.g. tcp://host:8786) and that the scheduler is running") from None
    n = int(workers or 1)
    if n < 1:
        raise ClusterError("--workers must be at least 1")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           memory_limit=memory_limit, silence_logs=logging.ERROR)
    return Client(cluster)


def _close(client) -> None:
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


class _Runner:
    """Runs block tasks on a ``distributed.Client`` or, without one, one after the other here."""

    def __init__(self, client=None, cancel=None):
        self.client = client
        self.cancel = cancel

    def put(self, obj):
        """Send a large object (the model) to every worker once."""
        if self.client is None:
            return obj
        return self.client.scatter(obj, broadcast=True, hash=False)

    def map(self, fn, calls: list[tuple], tick: Callable[[], None] | None = None) -> list:
        if not calls:
            return []
        if self.client is None:
            out = []
            for args in calls:
                if is_cancelled(self.cancel):
                    raise Cancelled("cancelled")
                out.append(fn(*args))
                if tick:
                    tick()
            return out
        from distributed import as_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        index = {f.key: k for k, f in enumerate(futures)}
        out = [None] * len(futures)
        try:
            for fut in as_completed(futures):
                out[index[fut.key]] = fut.result()
                if tick:
                    tick()
                if is_cancelled(self.cancel):
                    raise Cancelled("cancelled")
        except BaseException:
            self.client.cancel(futures)
            raise
        return out


# --------------------------------------------------------------------------- tasks (run on workers)


def _touch(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"")
    os.replace(tmp, path)


def _model_channels(block: np.ndarray, in_channels: int) -> np.ndarray:
    """``(C, h, w)`` input as the model wants it: RGB(A) to grey for one-channel models."""
    if block.shape[0] != in_channels and in_channels == 1 and block.shape[0] in (3, 4):
        return np.asarray(block[:3], dtype=np.float32).mean(axis=0, keepdims=True)
    if block.shape[0] != in_channels:
        raise ZarrInputError(f"the model expects {in_channels} channel(s) but the image has {block.shape[0]}")
    return block


def _task_sample(source: ImageSource, y0: int, y1: int, step: int, in_channels: int) -> np.ndarray:
    W = source.plane_shape[1]
    return _model_channels(source.read(y0, y1, 0, W, step, step), in_channels)


def _task_plan(model, plane_shape, device, tile, precision, memory_budget) -> dict:
    from .predict import Predictor

    p = Predictor.for_plane(model, plane_shape, device=device, tile=tile, precision=precision,
                            memory_budget=memory_budget)
    return {"precision": p.precision, "tile": list(p.tile), "batch_size": p.batch_size,
            "step": list(p.grid(plane_shape).step)}


def _task_predict(source: ImageSource, model, stats, settings: dict, region, probs_path: str, marker: str,
                  threads: int | None):
    import torch

    from .model import alignment
    from .predict import Predictor
    from .tileplan import TilePlan, tile_margin
    from .tiling import Window

    if threads:
        torch.set_num_threads(threads)
    H, W = source.plane_shape
    plan = TilePlan(tuple(settings["tile"]), tile_margin(model.config), alignment(model.config), settings["batch_size"])
    pred = Predictor(model, plan, device=settings["device"], precision=settings["precision"])
    (ra, rb), (ca, cb) = pred.grid((H, W), region).input_rows_cols()
    block = _model_channels(source.read(ra, rb, ca, cb), model.in_channels)
    probs = pred.plane(Window(block, ra, ca, (block.shape[0], H, W)), np.asarray(stats), region=region)
    import zarr

    y0, y1, x0, x1 = region
    zarr.open_array(probs_path, mode="r+")[:, y0:y1, x0:x1] = probs
    _touch(Path(marker))


def _task_label(probs_path: str, model, params: dict, plan: BlockPlan, i: int, j: int, scratch_path: str,
                summary_path: str) -> int:
    import zarr

    wy0, wy1, wx0, wx1 = plan.window(i, j)
    probs = zarr.open_array(probs_path, mode="r")[:, wy0:wy1, wx0:wx1]
    lab = label_window(probs, model, params)
    core, summary = block_summary(lab, plan, i, j)
    y0, y1, x0, x1 = plan.core(i, j)
    zarr.open_array(scratch_path, mode="r+")[y0:y1, x0:x1] = core
    tmp = summary_path + ".tmp.npz"
    np.savez(tmp, **summary)
    os.replace(tmp, summary_path)
    return int(summary["n"])


def _task_write(scratch_path: str, labels_path: str, box, lut: np.ndarray, marker: str):
    import zarr

    y0, y1, x0, x1 = box
    core = zarr.open_array(scratch_path, mode="r")[y0:y1, x0:x1]
    out = zarr.open_array(labels_path, mode="r+")
    out[y0:y1, x0:x1] = lut[core].astype(out.dtype)
    _touch(Path(marker))


def _task_downsample(src_path: str, dst_path: str, box, marker: str):
    import zarr

    y0, y1, x0, x1 = box
    src = zarr.open_array(src_path, mode="r")[2 * y0:2 * y1:2, 2 * x0:2 * x1:2]
    zarr.open_array(dst_path, mode="r+")[y0:y1, x0:x1] = src
    _touch(Path(marker))


# --------------------------------------------------------------------------- the run


class _Summaries:
    """Block summaries read from their ``.npz`` files on access (the main process never holds
    them all)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __getitem__(self, b):
        return _LazyNpz(self.folder / f"{b[0]}_{b[1]}.npz")


class _LazyNpz:
    def __init__(self, path: Path):
        self.path = path

    def __getitem__(self, key):
        with np.load(self.path) as z:
            return z[key]


def output_paths(out_dir, name: str, probabilities: bool = False) -> tuple[Path, Path | None]:
    """``DIR/<name>_labels.zarr`` and (with ``probabilities``) ``DIR/<name>_probabilities.zarr``."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}_labels.zarr", (out_dir / f"{name}_probabilities.zarr" if probabilities else None)


def _model_digest(model) -> str:
    h = hashlib.sha1(json.dumps(model.header(), sort_keys=True, default=str).encode())
    for k, v in model.network.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _grid_boxes(shape, block) -> list[tuple[int, int, int, int]]:
    H, W = shape
    by, bx = block
    return [(y, min(H, y + by), x, min(W, x + bx)) for y in range(0, H, by) for x in range(0, W, bx)]


def segment_to_zarr(
    image,
    model,
    output: str | os.PathLike,
    *,
    name: str | None = None,
    client=None,
    probabilities: bool = False,
    block: int = 2048,
    halo: int | None = None,
    device: str = "cpu",
    tile: int | None = None,
    precision: str = "auto",
    memory_budget: int | None = None,
    threads: int | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    cancel=None,
    **overrides,
) -> LargeSegmentation:
    """Segment a large 2D image into ``output/<name>_labels.zarr`` (OME-Zarr, with a pyramid).

    Parameters
    ----------
    image : path, ImageSource or array
        A ``.zarr`` / OME-Zarr folder or a tif (opened lazily by every worker), or an array
        already open here (numpy, dask, zarr; in-process runs only, ``client=None``).
    output : path
        Folder for the results; the work folder ``.<name>.napari-unet-work`` goes there too
        and is removed when the run completes.
    client : distributed.Client, optional
        Run the blocks on this cluster (see :func:`connect`); None runs them here.
    probabilities : bool
        Keep the class probabilities as ``<name>_probabilities.zarr``.
    block : int
        Edge of the labelling blocks (rounded up to a multiple of 1024, the labels' chunk);
        probabilities are computed in blocks of whole tiles of about this size.
    halo : int, optional
        Context for labelling (default :func:`napari_unet.blockwise.default_halo`).
    device, tile, precision, memory_budget
        As for :func:`~napari_unet.predict.predict_probabilities`, resolved on a worker.
    threads : int, optional
        torch threads per task (default: torch's own).
    overwrite : bool
        Replace existing results of the same name (when the new ones are complete); without
        it an existing ``<name>_labels.zarr`` is refused before any work.
    progress : callable, optional
        ``progress(phase, done, total)`` after every block; phases ``statistics``,
        ``probabilities``, ``labels``, ``write``, ``pyramid``.
    cancel : threading.Event or callable, optional
        Stops between blocks (:class:`~napari_unet.tiling.Cancelled`); a rerun resumes.
    **overrides
        Post-processing: ``threshold``, ``seed_threshold``, ``min_size``, ``smooth``, ``fill_holes``.
    """
    t0 = time.perf_counter()
    if isinstance(image, ImageSource):
        source = image
    elif isinstance(image, (str, os.PathLike)):
        source = open_source(image, model.in_channels)
    else:
        if client is not None:
            raise ValueError("an in-memory array can only be segmented in this process (client=None); "
                             "write it to zarr first to use a cluster")
        source = array_source(image, channel_axis=channel_axis, name=name or "image")
    name = name or source.name or "image"
    H, W = source.plane_shape
    C = source.channels
    if C != model.in_channels and not (model.in_channels == 1 and C in (3, 4)):
        raise ZarrInputError(f"the model expects {model.in_channels} channel(s) but {name} has {C}")
    out_dir = Path(output)
    labels_final, probs_final = output_paths(out_dir, name, probabilities)
    for p in (labels_final, probs_final):
        if p is not None and p.exists() and not overwrite:
            raise ZarrInputError(f"{p} already exists: delete it, choose another output folder or allow "
                                 f"overwriting (--overwrite)")
        if p is not None and source.path and p.resolve() == Path(source.path).resolve():
            raise ZarrInputError(f"the output {p} would replace the input; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".{name}.napari-unet-work"
    params = postprocessing_params(model, **overrides)
    runner = _Runner(client, cancel)

    def ticker(phase, total):
        state = {"done": 0}
        if progress:
            progress(phase, 0, total)

        def tick():
            state["done"] += 1
            if progress:
                progress(phase, state["done"], total)
        return tick

    # ---- plan (on a worker: it sees the hardware the blocks run on); fixed for a resume
    model_ref = runner.put(model)
    plan_file = work / "plan.json"
    identity = {"shape": [H, W], "channels": C, "model": _model_digest(model), "params": params,
                "block": int(block), "halo": halo, "device": device, "tile": tile, "precision": precision,
                "probabilities": bool(probabilities), "source": source.path or "array"}
    if plan_file.exists():
        saved = json.loads(plan_file.read_text())
        if saved["identity"] != json.loads(json.dumps(identity)):
            raise ZarrInputError(f"{work} holds an interrupted run with other settings or another model: "
                                 f"rerun with the same ones to resume, or delete that folder to start again")
        settings, stats = saved["settings"], np.asarray(saved["stats"])
    else:
        work.mkdir(parents=True, exist_ok=True)
        settings = runner.map(_task_plan, [(model_ref, (H, W), device, tile, precision, memory_budget)])[0]
        settings["device"] = device
        stats = _statistics(source, model, runner, ticker)
        tmp = plan_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": identity, "settings": settings, "stats": stats.tolist()}))
        os.replace(tmp, plan_file)
    resumed = 0

    # ---- probabilities
    sy, sx = settings["step"]
    by = max(1, round(block / sy)) * sy
    bx = max(1, round(block / sx)) * sx
    K = model.config.n_classes
    probs_path = work / "probabilities.zarr"
    create_probabilities_zarr(probs_path, K, (H, W), (min(by, H), min(bx, W)), class_names=model.class_names,
                              scale=source.scale, name=f"{name} probabilities")
    (work / "predict").mkdir(exist_ok=True)
    calls = []
    for box in _grid_boxes((H, W), (by, bx)):
        marker = work / "predict" / f"{box[0]}_{box[2]}.done"
        if marker.exists():
            resumed += 1
            continue
        calls.append((source, model_ref, stats, settings, box, str(probs_path / "0"), str(marker), threads))
    runner.map(_task_predict, calls, ticker("probabilities", len(calls)))

    # ---- labels, block-wise
    chunk = min(LABEL_CHUNK, max(64, int(block)))
    lb = -(-max(int(block), 1) // chunk) * chunk
    plan = BlockPlan((H, W), (lb, lb), default_halo(params) if halo is None else int(halo))
    scratch = work / "local_labels.zarr"
    if not scratch.exists():
        import zarr

        zarr.open_array(str(scratch), mode="w", shape=(H, W), chunks=(min(lb, H), min(lb, W)), dtype="uint32",
                        fill_value=0, zarr_format=2)
    sdir = work / "summaries"
    sdir.mkdir(exist_ok=True)
    calls = []
    for i, j in plan:
        target = sdir / f"{i}_{j}.npz"
        if target.exists():
            resumed += 1
            continue
        calls.append((str(probs_path / "0"), model_ref, params, plan, i, j, str(scratch), str(target)))
    runner.map(_task_label, calls, ticker("labels", len(calls)))

    # ---- merge (here: small)
    luts, n_objects = merge_blocks(plan, _Summaries(sdir), min_size=params["min_size"],
                                   best_match=uses_watershed(model, params))

    # ---- write the labels and their pyramid
    from .labels import labels_dtype

    dtype = labels_dtype(n_objects).name
    labels_work = work / "labels.zarr"
    group = create_labels_zarr(labels_work, (H, W), chunk=chunk, dtype=dtype, scale=source.scale,
                               name=f"{name} labels")
    (work / "write").mkdir(exist_ok=True)
    calls = []
    for i, j in plan:
        marker = work / "write" / f"{i}_{j}.done"
        if marker.exists():
            resumed += 1
            continue
        calls.append((str(scratch), str(labels_work / "0"), plan.core(i, j), luts[(i, j)], str(marker)))
    runner.map(_task_write, calls, ticker("write", len(calls)))
    levels = pyramid_shapes((H, W))
    calls_by_level = []
    for k in range(1, len(levels)):
        (work / "pyramid").mkdir(exist_ok=True)
        level_calls = []
        for box in _grid_boxes(levels[k], (2 * chunk, 2 * chunk)):
            marker = work / "pyramid" / f"{k}_{box[0]}_{box[2]}.done"
            if marker.exists():
                continue
            level_calls.append((str(labels_work / str(k - 1)), str(labels_work / str(k)), box, str(marker)))
        calls_by_level.append(level_calls)
    tick = ticker("pyramid", sum(len(c) for c in calls_by_level))
    for level_calls in calls_by_level:  # each level reads the one before
        runner.map(_task_downsample, level_calls, tick)
    del group

    # ---- move the results into place (an existing result only with overwrite), remove the work folder
    moves = [(labels_work, labels_final)] + ([(probs_path, probs_final)] if probabilities else [])
    for new, final in moves:
        if final.exists():
            old = work / f"replaced-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)  # deleted with the work folder
        os.replace(new, final)
    shutil.rmtree(work, ignore_errors=True)
    return LargeSegmentation(labels_final, probs_final, n_objects, (H, W), time.perf_counter() - t0, resumed)


def _statistics(source: ImageSource, model, runner: _Runner, ticker) -> np.ndarray:
    """Normalisation statistics from every ``s``-th row and column (at most about 4 million
    pixels per channel, the subsample of :meth:`Normalization.stats`), read in bands by tasks."""
    from .normalize import _MAX_SAMPLES

    H, W = source.plane_shape
    step = max(1, int(np.ceil(np.sqrt(H * W / _MAX_SAMPLES))))
    band = step * max(1, 4096 // step)
    calls = [(source, y, min(H, y + band), step, model.in_channels) for y in range(0, H, band)]
    parts = runner.map(_task_sample, calls, ticker("statistics", len(calls)))
    sample = np.concatenate(parts, axis=1)
    return model.normalization.stats(sample)


# --------------------------------------------------------------------------- napari layers


def segment_layer_data(data, model, output, *, name: str = "image", multiscale: bool = False, rgb: bool = False,
                       progress=None, cancel=None, **kwargs):
    """Segment a napari layer's data out of core, in this process: the full resolution of a
    multiscale layer (its first level), block by block, into ``output/<name>_labels.zarr``.

    Returns ``(result, levels)``: the :class:`LargeSegmentation` and the labels pyramid as lazy
    dask arrays for ``viewer.add_labels(levels, multiscale=True)``. ``progress(phase, done,
    total)`` and ``cancel`` as for :func:`segment_to_zarr` (a cancelled run resumes when called
    again with the same arguments).
    """
    from .io import full_resolution
    from .omezarr import open_labels_pyramid

    full = full_resolution(data, multiscale)
    channel_axis = (len(full.shape) - 1) if rgb else None
    if len(full.shape) - (1 if rgb else 0) != 2:
        raise ZarrInputError(f"the layer has shape {tuple(full.shape)}: out-of-core segmentation takes one 2D "
                             f"image (grey or RGB); choose a single plane")
    res = segment_to_zarr(full, model, output, name=name, channel_axis=channel_axis, progress=progress,
                          cancel=cancel, **kwargs)
    return res, open_labels_pyramid(res.labels)
