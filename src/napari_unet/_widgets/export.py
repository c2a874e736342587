"""Export widget: save a labels layer (uint16/uint32 tif) or an image layer such as the
probabilities (float32 tif). File > Save does the same through the plugin's writers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import napari.layers
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, create_widget

from ._layers import note, reason, tell

if TYPE_CHECKING:
    import napari.viewer


class ExportWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self._viewer = viewer
        self._layer = cast(ComboBox, create_widget(label="Layer", annotation="napari.layers.Layer"))
        self._path = FileEdit(label="Save to", mode="w", filter="TIFF (*.tif *.tiff)")
        self._save = PushButton(text="Save as tif")
        self._status = note("labels → uint16/uint32 tif; images → float32 tif")
        self.extend([self._layer, self._path, self._save, self._status])
        self._layer.changed.connect(self._suggest)
        self._save.changed.connect(self.save)
        self._suggest(self._layer.value)

    def _suggest(self, layer) -> None:
        """Propose "<folder>/<layer name>.tif", keeping the folder already chosen."""
        if layer is None:
            return
        current = Path(str(self._path.value))
        folder = current.parent if current.suffix else (current if str(current) != "." else Path.home())
        self._path.value = folder / f"{layer.name}.tif"

    def save(self):
        from napari_unet.io import write_labels, write_probabilities

        layer, path = self._layer.value, Path(str(self._path.value))
        if layer is None or not path.name or str(path) == ".":
            tell(self._status, "Choose a layer and a file name first", error=True)
            return None
        if path.suffix.lower() not in (".tif", ".tiff"):
            path = path.with_name(path.name + ".tif")
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        try:
            if isinstance(layer, napari.layers.Labels):
                written = write_labels(path, data)
            elif isinstance(layer, napari.layers.Image):
                written = write_probabilities(path, data)
            else:
                tell(self._status, f"{layer.name} is neither a labels nor an image layer", error=True)
                return None
        except (OSError, ValueError) as e:
            tell(self._status, f"Could not save {layer.name}: {reason(e)}", error=True)
            return None
        tell(self._status, f"Saved {layer.name} to {written}")
        return written
