"""Export section: save a labels layer (uint16 tif, uint32 beyond 65535 ids) or one of the
plugin's probability / weight-map layers (float32 tif), atomically, never replacing a file
without asking. Raw images are not offered: they are the user's data, already on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import napari.layers
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from qtpy.QtCore import QTimer

from napari_unet.io import full_resolution

from ._layers import Overwrite, folder_for, form, plugin_metadata, reason, show_status, text_line

if TYPE_CHECKING:
    import napari.viewer

SAVABLE_IMAGES = ("probabilities", "weights")


class ExportWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer, progress=None):
        super().__init__(labels=False)
        self._viewer = viewer
        self._overwrite = Overwrite()
        self._folder_chosen = False
        self._layer = ComboBox(label="Layer", choices=self._choices, nullable=True,
                               tooltip="labels layers (uint16 tif) and the plugin's probability layers (float32 tif)")
        self._path = FileEdit(label="Save to", mode="w", filter="TIFF (*.tif *.tiff)")
        self._save = PushButton(text="Save as tif")
        self._status = text_line("Labels are saved as uint16 (uint32 beyond 65535 objects), probabilities as float32.")
        self.extend([form(self._layer, self._path), self._save, self._status])
        self._layer.changed.connect(self._suggest)
        self._path.changed.connect(self._path_changed)
        self._save.changed.connect(self.save)
        self._pick_default()
        self._repick = QTimer(self.native)
        self._repick.setSingleShot(True)
        self._repick.setInterval(0)
        self._repick.timeout.connect(self._pick_default)
        viewer.layers.events.inserted.connect(self._layer_added)
        self.native.destroyed.connect(lambda *_: viewer.layers.events.inserted.disconnect(self._layer_added))

    def _choices(self, *_) -> list:
        out = []
        for lyr in reversed(self._viewer.layers):  # top of the layer list first
            if isinstance(lyr, napari.layers.Labels) or (
                    isinstance(lyr, napari.layers.Image) and plugin_metadata(lyr).get("role") in SAVABLE_IMAGES):
                out.append((lyr.name, lyr))
        return out

    def _pick_default(self) -> None:
        """The newest segmentation result, else the top labels layer, else nothing."""
        self._layer.reset_choices()
        layers = [lyr for _, lyr in self._choices()]
        best = next((lyr for lyr in layers if plugin_metadata(lyr).get("role") == "labels"), None)
        best = best or next((lyr for lyr in layers if isinstance(lyr, napari.layers.Labels)), None)
        if best is not None and best is not self._layer.value:
            self._layer.value = best

    def _layer_added(self, event) -> None:
        if plugin_metadata(event.value).get("role") == "labels" or self._layer.value is None:
            self._repick.start()  # once the layer list has settled

    def _path_changed(self, *_) -> None:
        self._overwrite.pending = None
        if not self._suggesting:
            self._folder_chosen = True

    _suggesting = False

    def _suggest(self, layer) -> None:
        """Propose "<folder>/<layer name>.tif": the folder already chosen, else the folder of
        the image the layer was made from."""
        if layer is None:
            return
        current = Path(str(self._path.value))
        if self._folder_chosen and str(current) not in ("", "."):
            folder = current.parent if current.suffix else current
        else:
            folder = folder_for(self._viewer, layer)
        self._suggesting = True
        try:
            self._path.value = folder / f"{layer.name}.tif"
        finally:
            self._suggesting = False

    def save(self):
        from napari_unet.io import write_labels, write_probabilities

        layer, path = self._layer.value, Path(str(self._path.value))
        if layer is None or not path.name or str(path) == ".":
            show_status(self._status, "Choose a layer and a file name first", error=True)
            return None
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_name(path.name + ".tif")
        existed = path.exists()  # replaced only after the user said so (io refuses otherwise)
        if not self._overwrite.allowed(path, self._status, "Save as tif"):
            return None
        data = full_resolution(layer.data, getattr(layer, "multiscale", False))
        try:
            if isinstance(layer, napari.layers.Labels):
                written = write_labels(path, data, overwrite=existed)
            else:
                written = write_probabilities(path, data, overwrite=existed)
        except (OSError, ValueError) as e:
            show_status(self._status, f"Could not save {layer.name}: {reason(e)}", error=True)
            return None
        show_status(self._status, f"Saved {layer.name} to {written}")
        return written
