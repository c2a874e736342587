"""Model section: choose a built-in model or a model file, and the device it runs on."""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from qtpy.QtCore import QTimer

from ._jobs import Job
from ._layers import form, reason, show_status, text_line
from ._progress import ProgressRow
from ._session import builtin_names, session
from ._words import model_file_problem

if TYPE_CHECKING:
    import napari.viewer


def _devices() -> list[str]:
    if "torch" not in sys.modules:  # listing CUDA/MPS needs torch: filled in after the first load
        return ["auto", "cpu"] if session.device in ("auto", "cpu") else ["auto", "cpu", session.device]
    from napari_unet.device import available_devices

    return available_devices()


class ModelWidget(Container):
    """The current model (shared with the other widgets) and the device it runs on."""

    def __init__(self, viewer: napari.viewer.Viewer, progress: ProgressRow | None = None):
        super().__init__(labels=False)
        self._viewer = viewer
        self._job = None
        self._autoload = None
        names = builtin_names()
        self._builtin = ComboBox(label="Built-in model", choices=names, nullable=True, value=None,
                                 tooltip="models shipped with napari-unet; choosing one loads it")
        self._file = FileEdit(label="Model file", mode="r",
                              filter="napari-unet model or bioimage.io package (*.safetensors *.zip *.yaml)")
        self._load_file = PushButton(text="Load model file")
        self._export = PushButton(text="Export model (bioimage.io)...",
                                  tooltip="save the current model as a bioimage.io model package (zip)")
        self._device = ComboBox(label="Device", choices=_devices(), value=session.device)
        self._info = text_line("No model loaded yet.")
        self._status = text_line("" if names else "no built-in model installed: load a model file")
        self.extend([form(self._builtin, self._file, self._load_file, self._device), self._info, self._status, self._export])
        self.progress = progress
        if progress is None:  # on its own (not in the panel): its own progress row
            self.progress = ProgressRow()
            self.native.layout().addWidget(self.progress)

        self._builtin.changed.connect(lambda name: name and self.load(name))
        self._load_file.changed.connect(lambda: self.load(str(self._file.value)))
        self._device.changed.connect(self._device_changed)
        self._export.changed.connect(self._export_model)
        session.follow(self, self._show)
        self._show()
        if session.model is None and names:
            # load the default model once the dock is shown: the first load imports torch (seconds)
            self._autoload = QTimer(self.native)
            self._autoload.setSingleShot(True)
            self._autoload.timeout.connect(lambda: session.model is None and self.load(names[0]))
            self._autoload.start(300)

    def load(self, source: str) -> None:
        """Load a built-in model (by name) or a model file in the background."""
        if self._autoload is not None:
            self._autoload.stop()  # a choice of the user's wins over the default
        if not source or source == ".":
            show_status(self._status, "Choose a model file first", error=True)
            return
        if self._job is not None and self._job.running:
            self._job.cancel()  # its result is dropped; the newest choice wins
        show_status(self._status, f"Loading {source} ...")
        builtin = source in builtin_names()

        def work(report, cancelled):
            from napari_unet.modelfile import load_model

            return load_model(source)

        def failed(exc):
            from napari_unet.bioimageio import BioimageioError

            # a bioimage.io package's refusal already says what it holds and what is supported
            why = reason(exc) if builtin or isinstance(exc, BioimageioError) else model_file_problem(source, exc)
            kept = f" {session.model.name} stays the current model." if session.model is not None else ""
            show_status(self._status, f"Could not load the model: {why.rstrip('.')}.{kept}", error=True)

        self._job = Job(
            work, desc=f"Loading model {Path(source).name}",
            on_returned=lambda model: session.set_model(model, source), on_error=failed,
            owner=self.native, view=self.progress,
        )

    def _export_model(self) -> None:
        from .model_export import export_current_model

        self._export_job = export_current_model(self._viewer, self._status, self.native)

    def _device_changed(self, device: str) -> None:
        session.set_device(device)

    def _show(self) -> None:
        m = session.model
        with self._builtin.changed.blocked():  # blank when the current model is not a built-in one
            self._builtin.value = session.source if session.source in self._builtin.choices else None
        if m is None:
            self._info.value = "No model loaded yet."
            return
        from napari_unet.device import DeviceError, resolve_device

        if list(self._device.choices) != _devices():
            with self._device.changed.blocked():
                self._device.choices = _devices()
                self._device.value = session.device if session.device in self._device.choices else "auto"
        try:
            runs_on = str(resolve_device(session.device))
            show_status(self._status, "")
        except DeviceError as e:
            runs_on = "unavailable"
            show_status(self._status, str(e), error=True)
        channels = "1 (grey; colour images are averaged)" if m.in_channels == 1 else str(m.in_channels)
        self._info.value = (
            f"<b>{html.escape(m.name)}</b> ({html.escape(Path(session.source).name)})<br>"
            f"{html.escape(m.description or 'no description')}<br>"
            f"classes: {html.escape(', '.join(m.class_names))}<br>"
            f"expected channels: {channels}<br>"
            f"runs on: {runs_on}"
        )
