"""The model widget opens bioimage.io packages and reports refused ones in one line."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import yaml

pytest.importorskip("bioimageio.spec", reason="bioimageio.spec is not installed (pip install 'napari-unet[bioimageio]')")


def test_model_widget_opens_a_package_and_reports_a_refused_one(make_napari_viewer, qtbot, session, tmp_path):
    from _helpers import tiny_model

    from napari_unet._widgets.model import ModelWidget
    from napari_unet.bioimageio import export_bioimageio

    rng = np.random.default_rng(0)
    pkg = export_bioimageio(tiny_model(), tmp_path / "tiny.zip", test_image=(rng.random((120, 120)) * 255).astype(np.uint8))
    viewer = make_napari_viewer()
    w = ModelWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._file.value = pkg
    w._load_file.native.click()
    qtbot.waitUntil(lambda: session.source == str(pkg), timeout=30_000)
    assert session.model.name == "tiny" and session.model.provenance["bioimageio_package"]["file"] == "tiny.zip"
    model = session.model

    # a package of another architecture: refused, the current model kept
    with zipfile.ZipFile(pkg) as z:
        content = {n: z.read(n) for n in z.namelist()}
    rdf = yaml.safe_load(content.pop("rdf.yaml"))
    rdf["weights"]["pytorch_state_dict"]["architecture"] = {"callable": "UNet2d", "source": "unet.py"}
    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump(rdf))
        for n, b in content.items():
            z.writestr(n, b)
    w._file.value = bad
    w._load_file.native.click()
    qtbot.waitUntil(lambda: "Could not load the model" in w._status.value, timeout=30_000)
    assert "architecture UNet2d from unet.py" in w._status.value
    assert session.model is model


def test_export_model_button_writes_a_package(make_napari_viewer, qtbot, session, tmp_path, monkeypatch):
    from _helpers import tiny_model

    from napari_unet._widgets import model_export
    from napari_unet._widgets.model import ModelWidget
    from napari_unet.bioimageio import load_bioimageio

    viewer = make_napari_viewer()
    w = ModelWidget(viewer)
    w._autoload and w._autoload.stop()
    session.set_model(tiny_model(), "tiny.safetensors")
    out = tmp_path / "exported.zip"
    monkeypatch.setattr(model_export, "ask_path", lambda parent, suggested: out)
    monkeypatch.setattr(model_export, "ask_authors", lambda parent, suggested: ["Ada Lovelace", "Lab X"])
    w._export.native.click()
    qtbot.waitUntil(lambda: "Exported tiny" in w._status.value, timeout=60_000)
    assert load_bioimageio(out).config == session.model.config
    rdf = yaml.safe_load(zipfile.ZipFile(out).read("rdf.yaml"))
    assert rdf["authors"] == [{"name": "Ada Lovelace"}, {"name": "Lab X"}] and rdf["license"] == "CC-BY-4.0"
    # nothing chosen in the dialog: nothing happens
    monkeypatch.setattr(model_export, "ask_path", lambda parent, suggested: None)
    assert model_export.export_current_model(viewer, w._status, w.native) is None

    # a two-channel model with no image layer to take the test image from: one line, no file
    session.set_model(tiny_model(in_channels=2), "two.safetensors")
    bad = tmp_path / "two.zip"
    monkeypatch.setattr(model_export, "ask_path", lambda parent, suggested: bad)
    w._export.native.click()
    qtbot.waitUntil(lambda: "Could not export the model" in w._status.value, timeout=60_000)
    assert "takes 2 channels" in w._status.value and not bad.exists()
    # with a two-channel image layer selected it works
    rng = np.random.default_rng(1)
    viewer.add_image((rng.random((2, 120, 130)) * 255).astype(np.uint8), name="two channels")
    w._export.native.click()
    qtbot.waitUntil(lambda: "Exported tiny" in w._status.value, timeout=60_000)
    assert load_bioimageio(bad).in_channels == 2
