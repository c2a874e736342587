"""The state the widgets share: the current model, where it came from, and the device."""

from __future__ import annotations

from psygnal import Signal

from napari_unet.builtin import builtin_names  # default model first: the order `napari-unet models` lists

__all__ = ["Session", "session", "builtin_names"]


class Session:
    """Current model (a ``SegmentationModel`` or None), its source and the device to run on.

    ``changed`` is emitted (on the main thread) whenever one of them changes; ``segmented``
    with a one-line summary whenever an image was segmented (by Segment or after fine-tuning),
    so that every section shows the latest result.
    """

    changed = Signal()
    segmented = Signal(str)

    def __init__(self) -> None:
        self.model = None
        self.source = ""
        self.device = "auto"

    def set_model(self, model, source: str) -> None:
        self.model, self.source = model, str(source)
        self.changed.emit()

    def set_device(self, device: str) -> None:
        if device != self.device:
            self.device = device
            self.changed.emit()

    def get_model(self):
        """The current model; loads the default built-in one if none was chosen yet (call from
        a worker thread: the first load imports torch). The caller sets it as current."""
        if self.model is not None:
            return self.model, self.source
        names = builtin_names()
        if not names:
            from napari_unet.modelfile import ModelFileError

            raise ModelFileError("no model loaded and no built-in model installed: "
                                 "load a model file in the Model widget")
        from napari_unet.modelfile import load_model

        return load_model(names[0]), names[0]

    def follow(self, widget, callback, signal: str = "changed") -> None:
        """Call ``callback`` on every emission of ``signal`` while the magicgui ``widget`` exists."""
        sig = getattr(self, signal)
        sig.connect(callback)
        widget.native.destroyed.connect(lambda *_: sig.disconnect(callback))

    def reset(self) -> None:
        self.model, self.source, self.device = None, "", "auto"
        self.changed.emit()


#: the one session of this napari process (one model at a time, shared by all widgets)
session = Session()
