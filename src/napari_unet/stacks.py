"""Loops over the 2D planes of a stack that the panels need: the weight map of every plane and
the annotated planes of an image (Qt-free, so that they are tested without a viewer)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["StackWeights", "annotated_planes", "weight_stack"]


@dataclass
class StackWeights:
    """The weight map of every plane and what the user should know about it."""

    weights: np.ndarray
    border_max: float  # the largest border term (0 when no two cells are close)
    cells: int  # painted cells (values >= 2) in the plane with the most


def weight_stack(labels, w0: float, sigma: float, class_balance: bool) -> StackWeights:
    """:func:`napari_unet.weightmap.weight_map` of every 2D plane of ``labels`` (label
    convention: 0 = not annotated, 1 = background, 2.. = cells)."""
    from .weightmap import border_weight, class_weights

    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    border, cells = 0.0, 0
    for idx in np.ndindex(labels.shape[:-2]):
        plane = labels[idx]
        # the paper's weight map (weightmap.weight_map), its border term kept apart for the report
        b = border_weight(plane, w0=w0, sigma=sigma) if w0 > 0 else np.zeros(plane.shape, np.float32)
        out[idx] = class_weights(plane, class_balance=class_balance) + b
        if plane.any():
            border = max(border, float(b.max()))
            cells = max(cells, int(np.unique(plane[plane >= 2]).size))
    return StackWeights(out, border, cells)


def annotated_planes(image, labels, *, channel_last: bool = False, name: str = "the image") -> tuple[list, list]:
    """Images and labels (copied: painting may go on) of every 2D plane of ``labels`` with
    something painted (> 0). ``image`` has the shape of ``labels``, plus a last colour axis
    when ``channel_last``; ``name`` names the image in the error raised when they differ."""
    labels = np.asarray(labels)
    shape = tuple(image.shape[:-1] if channel_last else image.shape)
    if shape != labels.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match {name} of shape {shape}")
    images, labs = [], []
    for idx in np.ndindex(labels.shape[:-2]):
        if np.any(labels[idx] > 0):
            images.append(np.asarray(image[idx]))
            labs.append(np.array(labels[idx], copy=True))
    return images, labs
