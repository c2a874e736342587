"""Segmenting a layer too large for memory (multiscale, or a big dask/zarr array): the full
resolution block by block into an OME-Zarr on disk, shown as a lazy multiscale labels layer."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

from napari_unet.blockwise import is_out_of_core  # noqa: F401  (numpy and scipy only)

from ._jobs import Job
from ._layers import reason, show_status
from ._session import session

#: where results go for a layer that was not opened from a file
RESULTS = Path.home() / "napari-unet"


def output_for(layer) -> tuple[Path, str]:
    """``(folder, name)`` for the layer's results: beside the file it was opened from (else in
    :data:`RESULTS`), under a name whose ``<name>_labels.zarr`` does not exist yet."""
    path = getattr(getattr(layer, "source", None), "path", None)
    folder = Path(path).parent if path else RESULTS
    base = re.sub(r"[^\w.-]+", "_", layer.name).strip("_") or "image"
    name, k = base, 1
    while (folder / f"{name}_labels.zarr").exists():
        k += 1
        name = f"{base}-{k}"
    return folder, name


def _out_of_core():
    """:mod:`napari_unet.distributed`, which needs the optional ``dask`` extra (dask, zarr) that
    napari's plugin installer does not add: imported only when a large layer is segmented, so
    that a plain install opens the panel and says what to install."""
    missing = [m for m in ("dask", "zarr") if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"segmenting a layer this large block by block needs {' and '.join(missing)}: "
                           f"pip install 'napari-unet[dask]'")
    return importlib.import_module("napari_unet.distributed")


def segment_layer_out_of_core(viewer, layer, *, status=None, on_finished=None, owner=None, view=None) -> Job:
    """Segment ``layer``'s full resolution with the current model, block by block, into
    ``<folder>/<name>_labels.zarr`` (see :func:`output_for`), then add it as a lazy multiscale
    labels layer. Cancel stops between blocks; segmenting again resumes."""
    data, multiscale, rgb, title = layer.data, layer.multiscale, layer.rgb, layer.name
    device = session.device
    folder, name = output_for(layer)

    def work(report, cancelled):
        distributed = _out_of_core()
        model, source = session.get_model()
        res, levels = distributed.segment_layer_data(data, model, folder, name=name, multiscale=multiscale, rgb=rgb,
                                         device=device, progress=lambda *v: report(v), cancel=cancelled)
        return model, source, res, levels

    def progress(value):
        phase, done, total = value
        job.set_description(f"Segmenting {title} block by block: {phase}")

    def returned(result):
        model, source, res, levels = result
        if session.model is None:
            session.set_model(model, source)
        scale = tuple(layer.scale[-2:])
        viewer.add_labels(levels, multiscale=True, name=f"{title} labels", scale=scale,
                          metadata={"napari_unet": {"role": "labels", "source": title, "path": str(res.labels)}})
        message = f"{title}: {res.n_objects} objects found with {model.name}; labels saved in {res.labels}"
        show_status(status, message)
        session.segmented.emit(message)

    job = Job(
        work, desc=f"Segmenting {title} block by block", count=lambda v: (v[1], v[2]), on_progress=progress,
        on_returned=returned,
        on_error=lambda exc: show_status(status, f"Segmentation failed: {reason(exc)}", error=True),
        on_cancelled=lambda: show_status(status, f"Segmentation of {title} cancelled: segment again to resume"),
        on_finished=on_finished, owner=owner, view=view,
    )
    return job
