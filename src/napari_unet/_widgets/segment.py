"""Segment widget: run the current model on an image layer in the background."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, create_widget

from ._jobs import Job
from ._layers import image_data, note, plane_shape, put, reason, tell
from ._session import session

if TYPE_CHECKING:
    import napari.viewer


def segment_layer(viewer, layer, *, all_classes: bool = False, status=None, on_finished=None, owner=None) -> Job:
    """Segment image ``layer`` with the current model (the default built-in one if none was
    chosen) into the layers "<image> probabilities" and "<image> labels" (updated, not
    duplicated, on a second run). Returns the running :class:`Job`."""
    data, channel_axis = image_data(layer)
    device, name = session.device, layer.name
    n_planes = math.prod(plane_shape(layer)[:-2])

    def work(report, cancelled):
        from napari_unet.predict import segment

        model, source = session.get_model()
        seg = segment(np.asarray(data), model, channel_axis=channel_axis, device=device,
                      progress=lambda done, total: report((done, total)), cancel=cancelled)
        return model, source, seg

    def progress(value):
        done, total = value
        if n_planes > 1 and total:
            plane = min(n_planes, done * n_planes // total + 1)
            job.pbar.set_description(f"Segmenting {name}: plane {plane}/{n_planes}, tiles")

    def returned(result):
        model, source, seg = result
        if session.model is None:
            session.set_model(model, source)
        probs = seg.probabilities if all_classes else seg.probabilities[model.foreground_class]
        put(viewer, "image", probs, role="probabilities", source=layer, name=f"{name} probabilities",
            colormap="magma", contrast_limits=(0.0, 1.0), blending="additive", opacity=0.6)
        put(viewer, "labels", seg.labels, role="labels", source=layer, name=f"{name} labels")
        n = int(seg.labels.max())
        tell(status, f"{name}: {n} object{'s' * (n != 1)} found with {model.name}")

    job = Job(
        work, desc=f"Segmenting {name}: tiles", on_progress=progress, on_returned=returned,
        on_error=lambda exc: tell(status, f"Segmentation failed: {reason(exc)}", error=True),
        on_cancelled=lambda: tell(status, f"Segmentation of {name} cancelled"),
        on_finished=on_finished, owner=owner,
    )
    return job


class SegmentWidget(Container):
    """Choose an image layer, press Segment; Cancel stops within a tile."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self.job: Job | None = None
        self._image = cast(ComboBox, create_widget(label="Image", annotation="napari.layers.Image"))
        self._all = CheckBox(text="All class probabilities (else the foreground class only)", value=False)
        self._run = PushButton(text="Segment")
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._model = note("")
        self._status = note("")
        self.extend([self._image, self._all, self._model, self._run, self._cancel, self._status])
        self._run.changed.connect(self.run)
        self._cancel.changed.connect(self.cancel)
        session.follow(self, self._show_model)
        self._show_model()

    def _show_model(self) -> None:
        src = f"{session.source} (on {session.device})" if session.model is not None else "default built-in"
        self._model.value = f"Model: {src}"

    def run(self) -> None:
        layer = self._image.value
        if layer is None:
            tell(self._status, "Open or choose an image layer first", error=True)
            return
        if self.job is not None and self.job.running:
            return
        self._status.value = f"segmenting {layer.name} ..."
        self._run.enabled, self._cancel.enabled = False, True
        self.job = segment_layer(self._viewer, layer, all_classes=self._all.value, status=self._status,
                                 on_finished=self._finished, owner=self.native)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    def _finished(self) -> None:
        self._run.enabled, self._cancel.enabled = True, False
