"""Border-weight preview: the paper's loss weight map of an annotation layer, live as you paint."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, create_widget
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from napari_unet.io import full_resolution
from napari_unet.stacks import StackWeights, weight_stack

from ._layers import add_or_update_layer, find_plugin_layer, form, plugin_metadata, reason, show_status, text_line

if TYPE_CHECKING:
    import napari.viewer

WARN_STYLE = "color: #e3b341"


def layer_problem(layer) -> str:
    """Why the weight map of ``layer`` would mean nothing ("" when it follows the convention)."""
    if plugin_metadata(layer).get("role") == "labels":
        return (f"{layer.name} is a segmentation result (0 = background), not annotations: its weight map "
                "means nothing. Choose an annotation layer (0 = not annotated, 1 = background, 2.. = cells).")
    data = np.asarray(full_resolution(layer.data, getattr(layer, "multiscale", False)))
    if not data.any():
        return f"Nothing painted in {layer.name} yet: paint background (1) and a few cells (2, 3, ...)."
    values = np.unique(data)
    if 1 not in values:
        return (f"{layer.name} has no background (1) painted: if it is not an annotation layer (0 = not "
                "annotated, 1 = background, 2.. = cells), its weight map means nothing.")
    if not (values >= 2).any():
        return f"{layer.name} has no cells (2, 3, ...) painted yet."
    return ""


def explain(preview: StackWeights, w0: float, sigma: float) -> str:
    """What the map shows, and why w0 and sigma may seem to do nothing."""
    top = float(preview.weights.max())
    text = f"Largest weight {top:.2f}; 0 on unannotated pixels."
    if w0 > 0 and preview.border_max < 0.05 * w0:
        reach = 2 * sigma
        if preview.cells < 2:
            why = "fewer than two cells are painted"
        else:
            why = f"no two painted cells are closer than about {reach:.0f} px (2 sigma)"
        text += (f" w0 and sigma change nothing here: {why}. The border term only weighs background "
                 "painted between close cells; paint neighbouring cells with the gap between them as "
                 "background (1) to see it.")
    return text


class WeightsWidget(Container):
    """Shows "<labels> weight map" over the image; recomputed (debounced, in the background)
    when w0, sigma or the painting change. Picks an annotation layer by default."""

    def __init__(self, viewer: napari.viewer.Viewer, progress=None):
        super().__init__(labels=False)
        self._viewer = viewer
        self._layer = None  # the labels layer whose events we follow
        self._worker = None
        self._again = False
        self.updates = 0  # finished recomputations (for tests)
        self._source = cast(ComboBox, create_widget(label="Annotations", annotation="napari.layers.Labels"))
        self._w0 = FloatSpinBox(label="w0", value=10.0, min=0.0, max=100.0, step=1.0,
                                tooltip="height of the border term (paper and fine-tuning default: 10)")
        self._sigma = FloatSpinBox(label="sigma (px)", value=5.0, min=0.5, max=100.0, step=0.5,
                                   tooltip="width of the border term in pixels (paper and fine-tuning default: 5)")
        self._balance = CheckBox(text="class balance", value=True,
                                 tooltip="weigh background and cells so that each class counts as much in total")
        self._show = CheckBox(text="Show weight map", value=False)
        self._warning = text_line("")
        self._warning.native.setStyleSheet(WARN_STYLE)
        self._warning.visible = False
        self._status = text_line("Where fine-tuning's loss insists (the paper's weight map, eq. 2), for a layer "
                                 "painted in the label convention of section 3.")
        self.extend([form(self._source, self._w0, self._sigma), self._balance, self._show, self._warning,
                     self._status])
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)
        self._timer.timeout.connect(self._compute)
        for w in (self._w0, self._sigma, self._balance, self._show):
            w.changed.connect(self.refresh)
        self._source.changed.connect(self._follow)
        self._repick = QTimer(self.native)
        self._repick.setSingleShot(True)
        self._repick.setInterval(0)
        self._repick.timeout.connect(self._pick_default)
        self._chosen_by_user = False  # a layer picked in the list (not by a program) is kept
        self._source.native.activated.connect(self._user_choice)
        viewer.layers.events.inserted.connect(self._layer_added)
        self.native.destroyed.connect(lambda *_: viewer.layers.events.inserted.disconnect(self._layer_added))
        self._pick_default()
        self._follow(self._source.value)

    # ------------------------------------------------------------------ choosing the layer
    def _user_choice(self, *_):
        self._chosen_by_user = True

    def _pick_default(self) -> None:
        """An annotation layer made by the plugin, else a labels layer that is not a
        segmentation result; never the segmentation result when something else exists."""
        choices = [c for c in self._source.choices if c is not None]
        rank = {"annotations": 0, "labels": 2}
        ranked = sorted(choices, key=lambda lyr: rank.get(plugin_metadata(lyr).get("role"), 1))
        if ranked and ranked[0] is not self._source.value:
            self._source.value = ranked[0]

    def _layer_added(self, event) -> None:
        if not self._chosen_by_user or self._source.value is None:
            self._repick.start()  # once magicgui has refreshed the choices

    def _follow(self, layer) -> None:
        if self._layer is not None:
            for ev in (self._layer.events.paint, self._layer.events.data):
                ev.disconnect(self.refresh)
        self._layer = layer
        if layer is not None:
            layer.events.paint.connect(self.refresh)
            layer.events.data.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ computing
    def refresh(self, *_) -> None:
        """Recompute soon (painting fires many events: they are merged)."""
        if self._layer is None:
            self._warning.visible = False
            return
        overlay = find_plugin_layer(self._viewer, "weights", self._layer)
        if overlay is not None:
            overlay.visible = self._show.value
        self._timer.start()

    def _compute(self) -> None:
        if self._layer is not None:
            problem = layer_problem(self._layer)
            self._warning.value = problem
            self._warning.visible = bool(problem)
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
            _connect={"returned": lambda w: self._shown(layer, w, args), "errored": self._failed,
                      "finished": self._done},
            _start_thread=False,
        )
        self._worker.start()

    def _shown(self, layer, preview: StackWeights, args) -> None:
        if layer is not self._layer or not self._show.value:
            return
        weights = preview.weights
        overlay = add_or_update_layer(self._viewer, "image", weights, role="weights", source=layer,
                                      name=f"{layer.name} weight map", colormap="inferno", blending="additive",
                                      opacity=0.7, contrast_limits=(0.0, max(float(weights.max()), 1e-3)))
        overlay.colorbar.visible = True  # a colour bar with the weight values, in the canvas
        self.updates += 1
        show_status(self._status, explain(preview, args[0], args[1]))

    def _failed(self, exc) -> None:
        show_status(self._status, f"No weight map: {reason(exc)}", error=True)

    def _done(self) -> None:
        self._worker = None
        if self._again:
            self._again = False
            self._compute()
