"""Layer helpers: image data of a layer, the plugin's own result layers (recognised by
``layer.metadata["napari_unet"]``, so user layers are never touched) and messages."""

from __future__ import annotations

import napari.layers

from napari_unet.errors import first_line

KEY = "napari_unet"
_KINDS = {"image": napari.layers.Image, "labels": napari.layers.Labels}


def image_data(layer: napari.layers.Image):
    """``(array, channel_axis)`` for the core functions: full resolution, RGB(A) channel last."""
    from napari_unet.io import full_resolution

    data = full_resolution(layer.data, layer.multiscale)
    return data, (-1 if layer.rgb else None)


def plane_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """Shape of the image without its colour axis (the shape labels for it have)."""
    data, _ = image_data(layer)
    return tuple(data.shape[:-1] if layer.rgb else data.shape)


def layer_id(layer) -> str:
    """The id that the plugin's metadata uses to name the layer a result was made from."""
    return str(layer.unique_id)


def plugin_metadata(layer) -> dict:
    """The plugin's metadata of ``layer`` (role, source, part); empty for the user's layers."""
    md = layer.metadata.get(KEY) if layer is not None else None
    return md if isinstance(md, dict) else {}


def find_plugin_layer(viewer, role: str, source, part=None):
    """The plugin layer of ``role`` (and ``part``, e.g. the class of a probability layer)
    made from ``source``, or None."""
    for lyr in viewer.layers:
        md = plugin_metadata(lyr)
        if md.get("role") == role and md.get("source") == layer_id(source) and md.get("part") == part:
            return lyr
    return None


def find_plugin_layers(viewer, role: str, source) -> list:
    """Every plugin layer of ``role`` made from ``source``."""
    wanted = {"role": role, "source": layer_id(source)}
    return [lyr for lyr in viewer.layers if all(plugin_metadata(lyr).get(k) == v for k, v in wanted.items())]


def free_name(viewer, name: str) -> str:
    """``name``, or ``"name (U-Net)"`` when a layer of that name exists (not ``name [1]``:
    say whose layer it is)."""
    names = {lyr.name for lyr in viewer.layers}
    if name not in names:
        return name
    k, candidate = 1, f"{name} (U-Net)"
    while candidate in names:
        k += 1
        candidate = f"{name} (U-Net {k})"
    return candidate


def source_of(viewer, layer):
    """The layer ``layer`` was made from by the plugin (e.g. the image of annotations), or None."""
    src = plugin_metadata(layer).get("source")
    return next((lyr for lyr in viewer.layers if layer_id(lyr) == src), None)


def geometry(source, ndim: int) -> dict:
    """Scale and translate of ``source`` for a result with ``ndim`` dims (leading extra dims
    such as the class axis get scale 1)."""
    n = min(ndim, source.ndim)
    pad = ndim - n
    return {
        "scale": (1.0,) * pad + tuple(source.scale)[-n:],
        "translate": (0.0,) * pad + tuple(source.translate)[-n:],
    }


def add_or_update_layer(viewer, kind: str, data, *, role: str, source, name: str, part=None, **kwargs):
    """Update the plugin's ``role`` (``part``) layer made from ``source`` with ``data``, or add
    it (named ``name``, or ``name (U-Net)`` when a layer of the user's has that name)."""
    lyr = find_plugin_layer(viewer, role, source, part)
    position = None
    if lyr is not None and (not isinstance(lyr, _KINDS[kind]) or lyr.data.ndim != data.ndim):
        position, name = viewer.layers.index(lyr), lyr.name  # e.g. one class -> all classes
        viewer.layers.remove(lyr)
        lyr = None
    if lyr is not None:
        lyr.data = data
        for k in ("contrast_limits",):
            if k in kwargs:
                setattr(lyr, k, kwargs[k])
        return lyr
    meta = {KEY: {"role": role, "source": layer_id(source), "part": part}}
    if position is None:
        name = free_name(viewer, name)
    layer = _KINDS[kind](data, name=name, metadata=meta, **geometry(source, data.ndim), **kwargs)
    if position is None:
        return viewer.add_layer(layer)
    viewer.layers.insert(position, layer)
    return layer


def text_line(value: str = ""):
    """A left-aligned, word-wrapped text line for a widget (status, information)."""
    from magicgui.widgets import Label
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value)
    label.native.setVisible(bool(value))  # an empty status line takes no room
    label.native.setWordWrap(True)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return label


ERROR_STYLE = "color: #ff7b72"


def show_status(label, message: str, *, error: bool = False) -> None:
    """Show ``message`` in the widget's status line (red for a problem). No napari
    notification: the message stays where the user acted and goes when the next one comes
    (toasts from earlier runs would linger over later ones)."""
    if label is None:
        from napari.utils.notifications import show_error, show_info

        (show_error if error else show_info)(message)
        return
    label.value = message
    label.native.setStyleSheet(ERROR_STYLE if error else "")
    label.native.setVisible(bool(message))


def is_error(label) -> bool:
    """Whether the status line ``label`` shows a problem (red)."""
    return label.native.styleSheet() == ERROR_STYLE


def reason(exc: BaseException) -> str:
    """One line for the user: the message of the core's own errors, the type for others."""
    text = first_line(exc)  # the type's name when the message is empty
    if isinstance(exc, (ValueError, OSError, RuntimeError)) or not str(exc).strip():
        return text
    return f"{type(exc).__name__}: {text}"


def folder_for(viewer, layer):
    """A sensible folder to save results of ``layer`` in: the folder of the file it (or the
    image it was made from) was opened from, else the home folder."""
    from pathlib import Path

    for lyr in (layer, source_of(viewer, layer) if layer is not None else None):
        path = getattr(getattr(lyr, "source", None), "path", None)
        if path:
            return Path(path).parent
    return Path.home()


class Overwrite:
    """Never replace a file silently: the first Save on an existing file asks (in the status
    line); a second Save on the same file replaces it."""

    def __init__(self) -> None:
        self.pending = None

    def allowed(self, path, status, button: str) -> bool:
        from pathlib import Path

        path = Path(path)
        if not path.exists() or self.pending == path:
            self.pending = None
            return True
        self.pending = path
        show_status(status, f"{path.name} exists already in {path.parent}: press {button} again to replace it, "
                            "or change the file name.", error=True)
        return False


def form(*widgets):
    """Labelled input rows (a magicgui container with labels; notes go outside it so that they
    use the whole width of the section)."""
    from magicgui.widgets import Container

    box = Container(widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    return box
