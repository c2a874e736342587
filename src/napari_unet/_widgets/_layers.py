"""Layer helpers: image data of a layer, the plugin's own result layers (recognised by
``layer.metadata["napari_unet"]``, so user layers are never touched) and messages."""

from __future__ import annotations

import napari.layers
from napari.utils.notifications import show_error, show_info

KEY = "napari_unet"
_KINDS = {"image": napari.layers.Image, "labels": napari.layers.Labels}


def image_data(layer: napari.layers.Image):
    """``(array, channel_axis)`` for the core functions: full resolution, RGB(A) channel last."""
    data = layer.data[0] if layer.multiscale else layer.data
    return data, (-1 if layer.rgb else None)


def plane_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """Shape of the image without its colour axis (the shape labels for it have)."""
    data, _ = image_data(layer)
    return tuple(data.shape[:-1] if layer.rgb else data.shape)


def link(layer) -> str:
    return str(layer.unique_id)


def info(layer) -> dict:
    md = layer.metadata.get(KEY) if layer is not None else None
    return md if isinstance(md, dict) else {}


def find(viewer, role: str, source):
    """The plugin layer of ``role`` made from ``source``, or None."""
    for lyr in viewer.layers:
        if info(lyr).get("role") == role and info(lyr).get("source") == link(source):
            return lyr
    return None


def source_of(viewer, layer):
    """The layer ``layer`` was made from by the plugin (e.g. the image of annotations), or None."""
    src = info(layer).get("source")
    return next((lyr for lyr in viewer.layers if link(lyr) == src), None)


def geometry(source, ndim: int) -> dict:
    """Scale and translate of ``source`` for a result with ``ndim`` dims (leading extra dims
    such as the class axis get scale 1)."""
    n = min(ndim, source.ndim)
    pad = ndim - n
    return {
        "scale": (1.0,) * pad + tuple(source.scale)[-n:],
        "translate": (0.0,) * pad + tuple(source.translate)[-n:],
    }


def put(viewer, kind: str, data, *, role: str, source, name: str, **kwargs):
    """Update the plugin's ``role`` layer made from ``source`` with ``data``, or add it."""
    lyr = find(viewer, role, source)
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
    meta = {KEY: {"role": role, "source": link(source)}}
    layer = _KINDS[kind](data, name=name, metadata=meta, **geometry(source, data.ndim), **kwargs)
    if position is None:
        return viewer.add_layer(layer)
    viewer.layers.insert(position, layer)
    return layer


def note(value: str = ""):
    """A left-aligned, word-wrapped text line for a widget (status, information)."""
    from magicgui.widgets import Label
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value)
    label.native.setWordWrap(True)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return label


def tell(label, message: str, *, error: bool = False) -> None:
    """Show ``message`` in the widget's status line and as a napari notification."""
    if label is not None:
        label.value = message
    (show_error if error else show_info)(message)


def reason(exc: BaseException) -> str:
    """One line for the user: the message of the core's own errors, the type for others."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (ValueError, OSError, RuntimeError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
