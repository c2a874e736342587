"""Annotation helpers: the label convention, choosing a value to paint, annotated planes."""

from __future__ import annotations

import numpy as np

from ._layers import image_data, plane_shape

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
    """Images and labels (copied: painting may go on) of every annotated 2D plane."""
    data, _ = image_data(image_layer)
    labels = np.asarray(labels)
    if plane_shape(image_layer) != labels.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match image {image_layer.name!r} "
                         f"of shape {plane_shape(image_layer)}")
    images, labs = [], []
    for idx in np.ndindex(labels.shape[:-2]):
        if np.any(labels[idx] > 0):
            images.append(np.asarray(data[idx]))
            labs.append(np.array(labels[idx], copy=True))
    return images, labs
