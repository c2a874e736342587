"""Annotation helpers: the label convention, choosing a value to paint, annotated planes."""

from __future__ import annotations

import numpy as np

from napari_unet.stacks import annotated_planes

from ._layers import image_data

CONVENTION = ("Label convention: <b>0</b> = not annotated (ignored), <b>1</b> = background, "
              "<b>2, 3, …</b> = one cell each. Paint a few cells and some background around them; "
              "press <b>M</b> for a new cell.")


def new_cell(layer) -> None:
    """Select an unused cell value (largest + 1, at least 2) on the labels ``layer``."""
    layer.selected_label = max(int(np.max(layer.data)) + 1, 2)
    layer.mode = "paint"


def background(layer) -> None:
    layer.selected_label = 1
    layer.mode = "paint"


def plane_pairs(image_layer, labels) -> tuple[list, list]:
    """Images and labels (copied) of every annotated 2D plane of ``image_layer``
    (:func:`napari_unet.stacks.annotated_planes`)."""
    data, _ = image_data(image_layer)
    return annotated_planes(data, labels, channel_last=bool(image_layer.rgb), name=f"image {image_layer.name!r}")
