"""The Segment section's labelling settings (issue 10): the model's post-processing shown,
hidden until asked for, and what the user changes used for the next Segment."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def test_labelling_settings_show_the_model_and_pass_what_changed(make_napari_viewer, qtbot, session, tiny_model,
                                                                 blobs):
    from napari_unet._widgets.segment import SegmentWidget

    tiny_model.postprocessing = {"threshold": 0.5, "min_size": 0}
    session.set_model(tiny_model, "tiny.safetensors")
    viewer = make_napari_viewer()
    viewer.add_image(blobs[0], name="blobs")
    w = SegmentWidget(viewer)
    settings = w.labelling
    assert settings.rows.native.isHidden() and settings.overrides() == {}
    assert (settings.threshold.value, settings.min_size.value, settings.seed.value) == (0.5, 0, 0.0)
    settings.show.value = True
    assert not settings.rows.native.isHidden() and settings.overrides() == {}  # shown, unchanged
    settings.min_size.value = 100000  # larger than any object: nothing is left
    settings.fill_holes.value = True
    assert settings.overrides() == {"min_size": 100000, "fill_holes": True}
    w.run()
    qtbot.waitUntil(lambda: w.job is not None and not w.job.running, timeout=60_000)
    assert "0 objects found" in w._status.value
    assert not viewer.layers["blobs labels"].data.any()
    settings.show.value = False  # hidden: the model's own settings again
    assert settings.overrides() == {}
    tiny_model.postprocessing = {"threshold": 0.7}
    session.set_model(tiny_model, "tiny.safetensors")  # a model change shows its settings
    assert settings.threshold.value == pytest.approx(0.7) and settings.min_size.value == 0
    assert np.isfinite(settings.smooth.value)
