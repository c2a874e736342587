"""Border-weight preview: the paper's loss weight map of a labels layer, live as you paint."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, create_widget
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from ._layers import find, note, put, reason, tell

if TYPE_CHECKING:
    import napari.viewer


def weight_stack(labels: np.ndarray, w0: float, sigma: float, class_balance: bool) -> np.ndarray:
    """:func:`napari_unet.weightmap.weight_map` of every 2D plane of ``labels``."""
    from napari_unet.weightmap import weight_map

    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    for idx in np.ndindex(labels.shape[:-2]):
        out[idx] = weight_map(labels[idx], w0=w0, sigma=sigma, class_balance=class_balance)
    return out


class WeightsWidget(Container):
    """Shows "<labels> weight map" over the image; recomputed (debounced, in the background)
    when w0, sigma or the painting change."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._layer = None  # the labels layer whose events we follow
        self._worker = None
        self._again = False
        self.updates = 0  # finished recomputations (for tests)
        self._source = cast(ComboBox, create_widget(label="Labels", annotation="napari.layers.Labels"))
        self._w0 = FloatSpinBox(label="w0", value=10.0, min=0.0, max=100.0, step=1.0,
                                tooltip="height of the border term (paper: 10)")
        self._sigma = FloatSpinBox(label="sigma (px)", value=5.0, min=0.5, max=100.0, step=0.5,
                                   tooltip="width of the border term in pixels (paper: about 5)")
        self._balance = CheckBox(text="class balance", value=True)
        self._show = CheckBox(text="Show weight map", value=False)
        self._status = note("")
        self.extend([self._source, self._w0, self._sigma, self._balance, self._show, self._status])
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._compute)
        for w in (self._w0, self._sigma, self._balance, self._show):
            w.changed.connect(self.refresh)
        self._source.changed.connect(self._follow)
        self._follow(self._source.value)

    def _follow(self, layer) -> None:
        if self._layer is not None:
            for ev in (self._layer.events.paint, self._layer.events.data):
                ev.disconnect(self.refresh)
        self._layer = layer
        if layer is not None:
            layer.events.paint.connect(self.refresh)
            layer.events.data.connect(self.refresh)
        self.refresh()

    def refresh(self, *_) -> None:
        """Recompute soon (painting fires many events: they are merged)."""
        if self._layer is None:
            return
        overlay = find(self._viewer, "weights", self._layer)
        if overlay is not None:
            overlay.visible = self._show.value
        if self._show.value:
            self._timer.start()

    def _compute(self) -> None:
        if self._worker is not None:
            self._again = True  # one more run once this one is done
            return
        layer = self._layer
        if layer is None or not self._show.value:
            return
        labels = np.array(layer.data, copy=True)
        args = (self._w0.value, self._sigma.value, self._balance.value)
        self._worker = create_worker(
            weight_stack, labels, *args,
            _connect={"returned": lambda w: self._shown(layer, w), "errored": self._failed,
                      "finished": self._done},
            _start_thread=False,
        )
        self._worker.start()

    def _shown(self, layer, weights) -> None:
        if layer is not self._layer or not self._show.value:
            return
        put(self._viewer, "image", weights, role="weights", source=layer, name=f"{layer.name} weight map",
            colormap="inferno", blending="additive", opacity=0.7,
            contrast_limits=(0.0, max(float(weights.max()), 1e-3)))
        self.updates += 1
        self._status.value = f"largest weight {weights.max():.2f} (0 on unannotated pixels)"

    def _failed(self, exc) -> None:
        tell(self._status, f"No weight map: {reason(exc)}", error=True)

    def _done(self) -> None:
        self._worker = None
        if self._again:
            self._again = False
            self._compute()
