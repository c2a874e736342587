"""What was painted: plain-words checks of the painting, and its objects (cells, background strokes)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["check_annotations", "painted_objects", "count_objects"]


def check_annotations(labels_list) -> list[str]:
    """Plain-words warnings about painted annotations (project label convention), each saying
    what to paint: nothing painted, only background, no background (cells only), very little
    background, a single cell. An empty list means nothing to remark."""
    n_bg = n_cell = 0
    cells = set()
    for i, lab in enumerate(labels_list):
        a = np.asarray(lab)
        if a.size == 0:
            continue
        n_bg += int(np.count_nonzero(a == 1))
        fg = a >= 2
        n_cell += int(np.count_nonzero(fg))
        cells.update((i, int(v)) for v in np.unique(a[fg]))
    out = []
    paint = "background with label 1 (around the cells and on anything wrongly taken for a cell)"
    if n_bg == 0 and n_cell == 0:
        out.append("Nothing is painted: paint a few cells, each with its own label (2, 3, ...), and "
                   f"{paint}.")
    elif n_cell == 0:
        out.append("Only background is painted (one class only): the model would learn that there are no "
                   "cells. Paint a few whole cells too, each with its own label (2, 3, ...).")
    elif n_bg == 0:
        out.append("No background is painted, only cells (one class only): the model may start calling "
                   f"everything a cell. Paint {paint}.")
    elif n_bg < 0.1 * n_cell:
        out.append(f"Very little background is painted ({n_bg} pixels against {n_cell} cell pixels): paint "
                   f"more {paint}, at least a tenth as much as the cells.")
    if len(labels_list) > 1 and n_bg and n_cell:
        for i, lab in enumerate(labels_list):
            a = np.asarray(lab)
            has_bg, has_cell = bool(np.any(a == 1)), bool(np.any(a >= 2))
            if has_bg != has_cell:
                out.append(f"Training image {i + 1} has one class only ({'background' if has_bg else 'cells'}): fine "
                           "as an example of that class, but check that its labels are the intended ones.")
    if len(cells) == 1:
        out.append("Only one cell is painted: paint a few more (3 to 5), so that the model sees how cells vary "
                   "and some can be held out to check that fine-tuning helps.")
    return out


# --------------------------------------------------------------------------- hold-out and distillation


def painted_objects(labels_list):
    """Painted objects: each cell (one label value >= 2) and each 8-connected background stroke."""
    bg, cells, comps = [], [], []
    for i, lab in enumerate(labels_list):
        a = np.asarray(lab)
        comp, n = ndi.label(a == 1, structure=np.ones((3, 3), bool))
        comps.append(comp)
        bg += [(i, k) for k in range(1, n + 1)]
        cells += [(i, int(v)) for v in np.unique(a[a >= 2])]
    return bg, cells, comps


def count_objects(labels_list) -> dict:
    """``{"cells": n, "background_strokes": m}`` painted in ``labels_list``."""
    bg, cells, _ = painted_objects(labels_list)
    return {"cells": len(cells), "background_strokes": len(bg)}
