"""The Model, Segment and Export widgets, the reader, writers, samples and the manifest,
driven as a user would (runs under Xvfb through pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import tifffile  # noqa: E402

from napari_unet._widgets._layers import info  # noqa: E402
from napari_unet._widgets._session import builtin_names  # noqa: E402
from napari_unet._widgets.export import ExportWidget  # noqa: E402
from napari_unet._widgets.model import ModelWidget  # noqa: E402
from napari_unet._widgets.segment import SegmentWidget  # noqa: E402

WIDGETS = ["Model", "Segment", "Annotate and fine-tune", "Border-weight preview", "Export"]


def wait_job(qtbot, widget, timeout=60_000):
    qtbot.waitUntil(lambda: widget.job is not None and not widget.job.running, timeout=timeout)


# ------------------------------------------------------------------------------- model


def test_model_widget_loads_a_file_and_reports_a_bad_one(make_napari_viewer, qtbot, session, tiny_model_file, tmp_path):
    viewer = make_napari_viewer()
    w = ModelWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._file.value = tiny_model_file
    w._load_file.native.click()
    qtbot.waitUntil(lambda: session.source == str(tiny_model_file), timeout=30_000)
    assert session.model.name == "tiny"
    text = w._info.value
    assert "classes: background, cell" in text and "expected channels: 1" in text and "runs on: cpu" in text
    assert "cpu" in w._device.choices
    w._device.value = "cpu"
    assert session.device == "cpu"

    model = session.model
    for bad in (tmp_path / "bad.safetensors", tmp_path / "missing.safetensors"):
        if bad.name == "bad.safetensors":
            bad.write_bytes(b"this is not a model" * 10)
        w._file.value = bad
        w._load_file.native.click()
        qtbot.waitUntil(lambda: "Could not load the model" in w._status.value, timeout=30_000)
        assert bad.name in w._status.value
        assert session.model is model  # the current model is kept
        w._status.value = ""


def test_builtin_models_load_on_open_and_on_choice(make_napari_viewer, qtbot, session, tiny_model, tmp_path,
                                                   monkeypatch):
    import napari_unet.builtin
    from napari_unet.modelfile import save_model

    for name in ("em-membranes", "fluo-nuclei"):  # stand-ins for the built-in models
        tiny_model.name, tiny_model.description = name, f"stand-in for {name}"
        save_model(tiny_model, tmp_path / f"{name}.safetensors")
    monkeypatch.setattr(napari_unet.builtin, "MODELS_DIR", tmp_path)
    viewer = make_napari_viewer()
    w = ModelWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert [c for c in w._builtin.choices if c] == ["fluo-nuclei", "em-membranes"]  # the default first
    qtbot.waitUntil(lambda: session.source == "fluo-nuclei", timeout=30_000)  # loaded on opening
    assert "stand-in for fluo-nuclei" in w._info.value
    w._builtin.value = "em-membranes"
    qtbot.waitUntil(lambda: session.source == "em-membranes", timeout=30_000)
    assert session.model.name == "em-membranes" and "em-membranes" in w._info.value
    session.set_model(session.model, "em-membranes fine-tuned")  # e.g. by the fine-tuning widget
    assert w._builtin.value is None  # so that choosing the built-in one again reloads it
    w._builtin.value = "em-membranes"
    qtbot.waitUntil(lambda: session.source == "em-membranes", timeout=30_000)

    session.reset()  # no model chosen: Segment uses the default built-in one
    viewer.add_image(np.zeros((64, 64), np.float32), name="empty")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg._run.native.click()
    wait_job(qtbot, seg)
    assert seg.job.outcome == "returned" and session.source == "fluo-nuclei"
    assert "fluo-nuclei" in seg._model.value


# ------------------------------------------------------------------------------- segment


def test_segment_creates_then_updates_its_own_layers(make_napari_viewer, qtbot, session, tiny_model, nuclei_image):
    viewer = make_napari_viewer()
    image = viewer.add_image(nuclei_image[:200, :300], name="nuclei")
    mine = viewer.add_labels(np.zeros((200, 300), np.uint8), name="nuclei labels")  # the user's own
    session.set_model(tiny_model, "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._image.value is image
    w._run.native.click()
    wait_job(qtbot, w)
    assert w.job.outcome == "returned", w._status.value
    results = [lyr for lyr in viewer.layers if info(lyr)]
    assert {info(lyr)["role"] for lyr in results} == {"probabilities", "labels"}
    probs = next(lyr for lyr in results if info(lyr)["role"] == "probabilities")
    labels = next(lyr for lyr in results if info(lyr)["role"] == "labels")
    assert probs.name == "nuclei probabilities" and probs.data.shape == (200, 300) and probs.data.dtype == np.float32
    assert labels.data.shape == (200, 300) and labels.name != "nuclei labels"  # did not take the user's name
    assert not mine.data.any() and mine.name == "nuclei labels"

    labels.data = np.zeros_like(labels.data)
    w._run.native.click()  # second run: the same layers, updated
    wait_job(qtbot, w)
    assert len(viewer.layers) == 4
    assert viewer.layers[probs.name] is probs and viewer.layers[labels.name] is labels
    assert labels.data.any()
    w._all.value = True  # third run: every class; the probability layer keeps its name and place
    w._run.native.click()
    wait_job(qtbot, w)
    assert len(viewer.layers) == 4
    assert viewer.layers.index(probs.name) == 2 and viewer.layers[probs.name].data.shape == (2, 200, 300)
    assert not mine.data.any()


def test_segment_reports_bad_input_without_traceback(make_napari_viewer, qtbot, session, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 32, 32), np.float32), name="4d")
    session.set_model(tiny_model, "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.native.click()
    wait_job(qtbot, w)
    assert w.job.outcome == "error"
    assert "Segmentation failed" in w._status.value and "channel" in w._status.value
    assert len(viewer.layers) == 1


def test_cancel_stops_segmentation_and_leaves_no_layer(make_napari_viewer, qtbot, session, tiny_model, slow_forward):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((8, 128, 128), dtype=np.float32), name="stack")
    session.set_model(slow_forward(tiny_model, 0.2), "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.native.click()
    qtbot.waitUntil(lambda: w.job.done >= 1, timeout=30_000)  # a tile is done, the job runs on
    assert "plane" in w.job.pbar.desc
    assert w._cancel.enabled and not w._run.enabled
    w._cancel.native.click()
    wait_job(qtbot, w, timeout=10_000)
    assert w.job.outcome == "cancelled"
    assert w.job.done < w.job.pbar.total
    assert [lyr.name for lyr in viewer.layers] == ["stack"]
    assert "cancelled" in w._status.value and w._run.enabled


def test_closing_the_viewer_during_a_job_cancels_it(make_napari_viewer, qtbot, session, tiny_model, slow_forward):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 96, 96), np.float32), name="stack")
    session.set_model(slow_forward(tiny_model, 0.2), "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.native.click()
    job = w.job
    qtbot.waitUntil(lambda: job.done >= 1, timeout=30_000)
    viewer.close()
    qtbot.waitUntil(lambda: not job.running, timeout=10_000)
    assert job.cancelled() and job.done < job.pbar.total


def test_segment_real_image_gives_plausible_nuclei(builtin_nuclei, nuclei_image, make_napari_viewer, qtbot, session):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei_image, name="nuclei")
    session.set_model(builtin_nuclei, "fluo-nuclei")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.native.click()
    wait_job(qtbot, w, timeout=120_000)
    assert w.job.outcome == "returned", w._status.value
    labels = next(lyr for lyr in viewer.layers if info(lyr).get("role") == "labels").data
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    # the sample shows about 130 nuclei of a few hundred pixels each, covering about a fifth of it
    assert 50 <= sizes.size <= 300, sizes.size
    assert 100 <= np.median(sizes) <= 3000, np.median(sizes)
    assert 0.05 <= (labels > 0).mean() <= 0.6


# ------------------------------------------------------------------------------- export


def test_export_widget_and_file_save_write_tifs(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    small = np.zeros((40, 50), np.int32)
    small[5:10, 5:10] = 300
    big = small.copy()
    big[20:30, 20:30] = 70_000
    viewer.add_labels(small, name="small")
    viewer.add_labels(big, name="big")
    viewer.add_image(np.linspace(0, 1, 2000, dtype=np.float64).reshape(40, 50), name="probs")
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    for name, dtype in (("small", np.uint16), ("big", np.uint32), ("probs", np.float32)):
        w._layer.value = viewer.layers[name]
        assert w._path.value.name == f"{name}.tif"
        w._path.value = tmp_path / "widget" / name  # no suffix: .tif is added
        w._save.native.click()
        out = tifffile.imread(tmp_path / "widget" / f"{name}.tif")
        assert out.dtype == dtype and np.array_equal(out, viewer.layers[name].data.astype(dtype))
        # File > Save through the plugin's writer contributions
        viewer.layers[name].save(str(tmp_path / f"{name}.tif"), plugin="napari-unet")
        assert tifffile.imread(tmp_path / f"{name}.tif").dtype == dtype
    w._path.value = tmp_path / "no-such-dir-file" / "x.tif"
    (tmp_path / "no-such-dir-file").write_text("a file, not a folder")
    assert w.save() is None and "Could not save" in w._status.value


# ------------------------------------------------------------------------------- manifest, reader, samples


def test_manifest_widgets_in_plugins_menu(make_napari_viewer, qtbot, session):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    manifest = pm.get_manifest("napari-unet")
    assert [wd.display_name for wd in manifest.contributions.widgets] == WIDGETS
    viewer = make_napari_viewer()
    titles = []

    def walk(menu):
        for action in menu.actions():
            if action.menu():
                walk(action.menu())
            titles.append(action.text())

    walk(viewer.window.plugins_menu)
    for name in WIDGETS:
        assert any(name in t for t in titles), (name, titles)
        dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
        assert widget is not None
        if name == "Model" and builtin_names():  # it loads the default built-in model, soon after opening
            qtbot.waitUntil(lambda w=widget: w._job is not None and not w._job.running, timeout=30_000)


def test_opening_a_model_file_makes_it_current(make_napari_viewer, session, tiny_model_file):
    viewer = make_napari_viewer()
    layers = viewer.open(str(tiny_model_file), plugin="napari-unet")
    assert layers == [] and len(viewer.layers) == 0
    assert session.model is not None and session.source == str(tiny_model_file)


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    viewer.open_sample("napari-unet", "em")
    assert [lyr.name for lyr in viewer.layers] == ["nuclei", "em"]
    assert viewer.layers["em"].data.ndim == 2
