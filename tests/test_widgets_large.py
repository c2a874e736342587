"""Segmenting a multiscale (dask-backed) layer from the Segment widget: block by block to an
OME-Zarr, shown as a lazy multiscale labels layer; Cancel, then Segment again resumes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from napari_unet._widgets import large  # noqa: E402
from napari_unet._widgets.segment import SegmentWidget  # noqa: E402


def test_multiscale_layer_is_segmented_out_of_core(make_napari_viewer, qtbot, session, tiny_model, tmp_path,
                                                   monkeypatch, slow_forward):
    from scipy import ndimage as ndi

    monkeypatch.setattr(large, "RESULTS", tmp_path)
    session.set_model(tiny_model, "tiny")
    session.device = "cpu"
    rng = np.random.default_rng(0)
    image = (ndi.gaussian_filter(rng.random((300, 280)), 3) * 60000).astype(np.uint16)
    viewer = make_napari_viewer()
    layer = viewer.add_image([da.from_array(image, chunks=100), da.from_array(image[::2, ::2], chunks=100)],
                             multiscale=True, name="big scan")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._image.value = layer
    slow_forward(tiny_model, 0.3)
    w._run.native.click()
    qtbot.waitUntil(lambda: w.job.done >= 1, timeout=60_000)
    w.cancel()
    qtbot.waitUntil(lambda: not w.job.running, timeout=60_000)
    assert "cancelled" in w._status.value and "big scan labels" not in [lyr.name for lyr in viewer.layers]
    assert (tmp_path / ".big_scan.napari-unet-work").is_dir()  # finished blocks kept
    monkeypatch.undo()  # full speed again for the resumed run
    monkeypatch.setattr(large, "RESULTS", tmp_path)
    w._run.native.click()
    qtbot.waitUntil(lambda: not w.job.running, timeout=120_000)
    assert w.job.outcome == "returned", w._status.value
    labels = viewer.layers["big scan labels"]
    assert labels.multiscale and len(labels.data) == 2 and labels.data[0].shape == image.shape
    assert type(labels.data[0]).__name__ == "Array"  # lazy, backed by the zarr on disk
    assert str(tmp_path / "big_scan_labels.zarr") in w._status.value


def test_without_the_dask_extra_the_panel_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"needs zarr: pip install 'napari-unet\[dask\]'"):
        large._out_of_core()
