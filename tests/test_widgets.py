"""The Model, Segment and Export widgets, the reader, writers, samples and the manifest,
driven as a user would (runs under Xvfb through pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import tifffile  # noqa: E402

from napari_unet._widgets._layers import plugin_metadata  # noqa: E402
from napari_unet._widgets._session import builtin_names  # noqa: E402
from napari_unet._widgets.export import ExportWidget  # noqa: E402
from napari_unet._widgets.model import ModelWidget  # noqa: E402
from napari_unet._widgets.segment import SegmentWidget  # noqa: E402


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
        assert bad.name in w._status.value and "tiny stays the current model" in w._status.value
        assert "header" not in w._status.value  # plain words, not the file format's jargon
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
    results = [lyr for lyr in viewer.layers if plugin_metadata(lyr)]
    assert {plugin_metadata(lyr)["role"] for lyr in results} == {"probabilities", "labels"}
    probs = next(lyr for lyr in results if plugin_metadata(lyr)["role"] == "probabilities")
    labels = next(lyr for lyr in results if plugin_metadata(lyr)["role"] == "labels")
    assert probs.name == "nuclei cell probability" and probs.data.shape == (200, 300)
    assert probs.data.dtype == np.float32
    # the user's layer keeps its name; ours says whose it is (not "nuclei labels [1]")
    assert labels.name == "nuclei labels (U-Net)" and labels.data.dtype == np.uint16
    assert not mine.data.any() and mine.name == "nuclei labels"

    labels.data = np.zeros_like(labels.data)
    w._run.native.click()  # second run: the same layers, updated
    wait_job(qtbot, w)
    assert len(viewer.layers) == 4
    assert viewer.layers[probs.name] is probs and viewer.layers[labels.name] is labels
    assert labels.data.any()
    assert not mine.data.any()


def test_every_class_as_its_own_layer_named_by_class_and_no_slider(make_napari_viewer, qtbot, session, tiny_model,
                                                                      nuclei_image):
    viewer = make_napari_viewer()
    viewer.add_image(nuclei_image[:96, :128], name="nuclei")
    session.set_model(tiny_model, "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._all.value = True
    w._run.native.click()
    wait_job(qtbot, w)
    names = [lyr.name for lyr in viewer.layers]
    assert names == ["nuclei", "nuclei background probability", "nuclei cell probability", "nuclei labels"]
    assert viewer.layers["nuclei cell probability"].visible  # opens on the foreground class
    assert not viewer.layers["nuclei background probability"].visible
    assert all(viewer.layers[n].data.shape == (96, 128) for n in names)
    assert viewer.dims.ndim == 2  # no class slider
    w._all.value = False  # again, foreground only: the other class's layer goes
    w._run.native.click()
    wait_job(qtbot, w)
    assert [lyr.name for lyr in viewer.layers] == ["nuclei", "nuclei cell probability", "nuclei labels"]
    viewer.add_image(np.zeros((50, 60), np.float32), name="next image")
    assert viewer.dims.ndim == 2  # and no stray slider for the next image


def test_stack_reports_objects_per_plane(make_napari_viewer, qtbot, session, tiny_model, monkeypatch):
    import napari_unet.predict as predict

    stack = np.zeros((3, 64, 64), np.float32)
    labels = np.zeros((3, 64, 64), np.uint16)
    labels[0, 5:10, 5:10], labels[0, 20:30, 20:30] = 1, 2  # 2 objects in plane 0
    labels[1, 5:10, 5:10] = 3  # 1 in plane 1, none in plane 2 (ids unique over the stack)
    monkeypatch.setattr(predict, "segment", lambda image, model, **kw: predict.Segmentation(
        np.stack([1 - (labels > 0), labels > 0]).astype(np.float32), labels))
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    session.set_model(tiny_model, "tiny")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._run.native.click()
    wait_job(qtbot, w)
    assert "3 objects in 3 planes (0 to 2 per plane)" in w._status.value, w._status.value


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
    row = w.progress  # the progress row: what runs, the bar, the time left, Cancel beside it
    assert not row.isHidden() and "plane" in row.label.text() and row.bar.maximum() == w.job.total
    qtbot.waitUntil(lambda: "left" in row.label.text(), timeout=30_000)
    assert row.cancel_button.isEnabled() and not w._run.enabled
    row.cancel_button.click()
    wait_job(qtbot, w, timeout=10_000)
    assert w.job.outcome == "cancelled"
    assert w.job.done < w.job.pbar.total
    assert [lyr.name for lyr in viewer.layers] == ["stack"]
    assert "cancelled" in w._status.value and w._run.enabled and row.isHidden()


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
    labels = next(lyr for lyr in viewer.layers if plugin_metadata(lyr).get("role") == "labels").data
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
    probs = viewer.add_image(np.linspace(0, 1, 2000, dtype=np.float64).reshape(40, 50), name="probs")
    probs.metadata["napari_unet"] = {"role": "probabilities", "source": "x"}
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    for name, dtype in (("small", np.uint16), ("big", np.uint32), ("probs", np.float32)):
        w._layer.value = viewer.layers[name]
        assert w._path.value.name == f"{name}.tif"
        w._path.value = tmp_path / "widget" / name  # no suffix: .tif is added
        w._save.native.click()
        out = tifffile.imread(tmp_path / "widget" / f"{name}.tif")
        assert out.dtype == dtype and np.array_equal(out, viewer.layers[name].data.astype(dtype))
        # File > Save with the plugin's writer ("labels tif (uint16/uint32)")
        viewer.layers[name].save(str(tmp_path / f"{name}.tif"), plugin="napari-unet")
        assert tifffile.imread(tmp_path / f"{name}.tif").dtype == dtype
    w._path.value = tmp_path / "no-such-dir-file" / "x.tif"
    (tmp_path / "no-such-dir-file").write_text("a file, not a folder")
    assert w.save() is None and "Could not save" in w._status.value


def test_export_defaults_to_the_labels_beside_the_image_and_never_overwrites_silently(
        make_napari_viewer, qtbot, session, tiny_model, tmp_path):
    from napari_unet.io import write_tif

    folder = tmp_path / "experiment 1"
    write_tif(folder / "cells.tif", (np.random.default_rng(0).random((64, 80)) * 200).astype(np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(folder / "cells.tif"))
    session.set_model(tiny_model, "tiny")
    seg = SegmentWidget(viewer)
    viewer.window.add_dock_widget(seg)
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._layer.value is None  # the raw image is not offered: it is the user's data, on disk already
    assert "cells" not in [name for name, _ in w._choices()]
    seg._run.native.click()
    wait_job(qtbot, seg)
    qtbot.waitUntil(lambda: w._layer.value is not None, timeout=5_000)
    assert w._layer.value is viewer.layers["cells labels"]  # the segmentation result, by default
    assert w._path.value == folder / "cells labels.tif"  # beside the image it was made from
    w._save.native.click()
    first = tifffile.imread(folder / "cells labels.tif")
    assert first.dtype == np.uint16

    viewer.layers["cells labels"].data = np.zeros_like(first)
    w._save.native.click()  # the file exists: ask, do not replace
    assert "exists already" in w._status.value and "again" in w._status.value
    assert np.array_equal(tifffile.imread(folder / "cells labels.tif"), first)
    w._save.native.click()  # pressed again: replace
    assert not tifffile.imread(folder / "cells labels.tif").any()
    assert "Saved" in w._status.value


# ------------------------------------------------------------------------------- manifest, reader, samples


def test_manifest_one_panel_in_plugins_and_layers_segment_menus(make_napari_viewer, qtbot, session):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    manifest = pm.get_manifest("napari-unet")
    assert [wd.display_name for wd in manifest.contributions.widgets] == ["U-Net"]
    assert "napari/layers/segment" in manifest.contributions.menus
    viewer = make_napari_viewer()

    def titles(menu):
        out = []
        for action in menu.actions():
            if action.menu():
                out += titles(action.menu())
            out.append(action.text())
        return out

    assert any("U-Net" in t for t in titles(viewer.window.plugins_menu))
    layers_menu = next(a.menu() for a in viewer.window._qt_window.menuBar().actions() if "Layers" in a.text())
    segment_menu = next(a.menu() for a in layers_menu.actions() if a.menu() and "Segment" in a.text())
    assert any("U-Net" in t for t in titles(segment_menu))
    dock, panel = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net")
    assert list(panel.sections) == ["Model", "Segment", "Annotate and fine-tune", "Border-weight preview", "Export"]
    if builtin_names():  # it loads the default built-in model, soon after opening
        qtbot.waitUntil(lambda: panel.model._job is not None and not panel.model._job.running, timeout=30_000)


def test_opening_a_model_file_makes_it_current(make_napari_viewer, session, tiny_model_file):
    viewer = make_napari_viewer()
    layers = viewer.open(str(tiny_model_file), plugin="napari-unet")
    assert layers == [] and len(viewer.layers) == 0
    assert session.model is not None and session.source == str(tiny_model_file)


def _messages():
    from napari.utils.notifications import notification_manager

    got = []
    notification_manager.notification_ready.connect(lambda n: got.append(n.message))
    return got


def test_file_open_of_a_file_that_is_not_a_model_says_so_in_one_line(make_napari_viewer, qtbot, session,
                                                                       tiny_model_file, tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    import napari_unet._reader as reader

    viewer = make_napari_viewer()
    messages = _messages()
    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(b"this is not a model" * 10)
    other = tmp_path / "sam.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    short = tmp_path / "short.safetensors"
    short.write_bytes(tiny_model_file.read_bytes()[:-1000])  # a model cut short (an interrupted copy)
    from safetensors import safe_open

    with safe_open(str(tiny_model_file), framework="numpy") as f:
        header = f.metadata()
    broken = tmp_path / "broken.safetensors"  # a napari-unet header, but not its weights
    save_file({"w": np.zeros(3, np.float32)}, str(broken), metadata=header)
    for path, words in ((junk, "damaged, cut short, or not a safetensors file"),
                        (short, "damaged, cut short"),
                        (other, "weights saved by another program"),
                        (broken, "is a napari-unet model but cannot be used")):
        messages.clear()
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)  # File > Open (no reader-error dialog)
        qtbot.waitUntil(lambda: bool(messages), timeout=5_000)
        assert len(messages) == 1 and path.name in messages[0] and words in messages[0], messages
        assert "\n" not in messages[0] and "header too large" not in messages[0]
        assert len(viewer.layers) == 0 and session.model is None
    # another reader could open it: napari-unet declines (napari tries that one)
    monkeypatch.setattr(reader, "_other_readers", lambda path: ["some-plugin"])
    assert reader.get_reader(str(other)) is None and reader.get_reader(str(junk)) is None
    assert reader.get_reader(str(tiny_model_file)) is reader.read_model


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    viewer.open_sample("napari-unet", "em")
    assert [lyr.name for lyr in viewer.layers] == ["nuclei", "em"]
    assert viewer.layers["em"].data.ndim == 2


def test_a_sample_suggests_its_model_and_one_click_loads_it(make_napari_viewer, qtbot, session, tiny_model, tmp_path,
                                                            monkeypatch):
    import napari_unet.builtin
    from napari_unet.modelfile import save_model

    for name in ("em-membranes", "fluo-nuclei"):  # stand-ins for the built-in models
        tiny_model.name = name
        save_model(tiny_model, tmp_path / f"{name}.safetensors")
    monkeypatch.setattr(napari_unet.builtin, "MODELS_DIR", tmp_path)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._use.native.isHidden()  # the default model is the nuclei one
    viewer.open_sample("napari-unet", "em")
    w._image.value = viewer.layers["em"]
    assert not w._use.native.isHidden() and w._use.text == "Use em-membranes" and "em-membranes" in w._hint.value
    w._use.native.click()
    qtbot.waitUntil(lambda: session.source == "em-membranes", timeout=30_000)
    assert w._use.native.isHidden() and "em-membranes" in w._model.value


def test_three_class_model_shows_its_foreground_and_tta_averages(make_napari_viewer, qtbot, session, nuclei_image):
    import torch

    from napari_unet.model import UNetConfig
    from napari_unet.modelfile import SegmentationModel
    from napari_unet.predict import predict_probabilities

    torch.manual_seed(0)
    model = SegmentationModel.new(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3),
                                  class_names=["background", "nucleus", "nucleus boundary"])
    img = nuclei_image[:96, :128]
    viewer = make_napari_viewer()
    viewer.add_image(img, name="nuclei")
    session.set_model(model, "three")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._all.value = True
    w._tta.value = True
    w._run.native.click()
    wait_job(qtbot, w)
    names = [lyr.name for lyr in viewer.layers]
    assert names == ["nuclei", "nuclei nucleus probability", "nuclei background class probability",
                     "nuclei nucleus class probability", "nuclei nucleus boundary class probability", "nuclei labels"]
    probs = predict_probabilities(img, model, tta=True, device=session.device)
    fg = viewer.layers["nuclei nucleus probability"]
    assert fg.visible and not viewer.layers["nuclei nucleus class probability"].visible
    np.testing.assert_allclose(fg.data, probs[1] + probs[2], atol=1e-4)  # interior + boundary, 8 views averaged
    plain = predict_probabilities(img, model, device=session.device, scales=[1])
    assert not np.allclose(fg.data, plain[1] + plain[2], atol=1e-4)
    # the 0.7x checkbox, on by default ("auto": also at 0.7x where the network is surer); off: as it is
    assert w._scales.value
    w._tta.value, w._scales.value = False, False
    w._run.native.click()
    wait_job(qtbot, w)
    np.testing.assert_allclose(viewer.layers["nuclei nucleus probability"].data, plain[1] + plain[2], atol=1e-4)
