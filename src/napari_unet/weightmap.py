"""Pixel-wise loss weight map of the U-Net paper (Ronneberger et al. 2015, eq. 2).

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

Label convention: 0 = not annotated, 1 = background, >= 2 = one cell per value.

Choices made here (the paper leaves them open):

* ``w_c`` (class balance) is computed over annotated pixels only:
  ``w_c(class) = n_annotated / (n_classes_present * n_pixels_of_class)``, so that each
  class present has the same total weight and the mean of ``w_c`` over annotated pixels
  is 1. With ``class_balance=False``, ``w_c = 1`` on annotated pixels. An option beyond
  the paper, ``class_balance_power=0.5``, uses square-root weights instead.
* The border term is added on background pixels (label 1) only, i.e. on the gaps
  between cells as in the paper's figure 3d; on cell pixels ``w = w_c``.
* ``d1``, ``d2`` are Euclidean distances, in pixels, from the pixel centre to the
  centre of the nearest pixel of the nearest and the second-nearest cell (so a
  background pixel adjacent to a cell has d = 1).
* Unannotated pixels (label 0) get weight exactly 0. Fewer than two cells -> no border
  term.

Why our own code: no library we depend on ships the paper's weight map (scikit-image
and scipy give distance transforms, not distances to the *second*-nearest object).
Computing one full-image distance transform per cell costs O(n_cells * H * W); instead
each cell's distance transform is computed only inside its bounding box grown by the
radius ``R = sigma * sqrt(2 * ln(w0 / tol))`` beyond which the border term is below
``tol``. This is exact wherever the term is >= ``tol``: if d2 <= R, both the nearest and
the second-nearest cell have their boxes covering the pixel, and a box holds the
exact distance to its (whole) cell. Where d2 > R the term is set to 0 (error < tol).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["weight_map", "border_weight", "class_weights", "class_map_weights", "two_nearest_distances"]

_RELABEL_ABOVE = 1 << 20  # relabel sparse ids above this so find_objects stays small


def _check(labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be 2D (H, W), got shape {lab.shape}")
    if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
        if np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise ValueError(f"labels must be an integer image, got dtype {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("labels must be >= 0 (0 = not annotated, 1 = background, >= 2 = cells)")
    return lab


def _cells(lab: np.ndarray) -> np.ndarray:
    """Cell image with contiguous-enough ids >= 1 (0 = not a cell), for find_objects."""
    cells = np.where(lab >= 2, lab - 1, 0)
    if cells.size and cells.max() > max(_RELABEL_ABOVE, cells.size):
        _, inv = np.unique(cells, return_inverse=True)
        cells = inv.reshape(lab.shape)
        if lab.min() >= 2:  # no zero among the values: shift so that ids start at 1
            cells = cells + 1
    return cells


def two_nearest_distances(labels, max_distance: float = np.inf):
    """Distances (float32, pixels, shape (H, W)) to the nearest and second-nearest cell.

    ``d1`` and ``d2`` are exact where ``d2 <= max_distance`` (and ``d1`` where
    ``d1 <= max_distance``); elsewhere they are >= the true distance, possibly inf.
    Cell pixels get d1 = 0. No cell -> all inf.
    """
    lab = _check(labels)
    cells = _cells(lab)
    h, w = lab.shape
    d1 = np.full(lab.shape, np.inf, dtype=np.float32)
    d2 = np.full(lab.shape, np.inf, dtype=np.float32)
    margin = h + w if not np.isfinite(max_distance) else int(math.ceil(max_distance))
    for idx, sl in enumerate(ndi.find_objects(cells), start=1):
        if sl is None:
            continue
        y0 = max(sl[0].start - margin, 0)
        y1 = min(sl[0].stop + margin, h)
        x0 = max(sl[1].start - margin, 0)
        x1 = min(sl[1].stop + margin, w)
        box = (slice(y0, y1), slice(x0, x1))
        dist = ndi.distance_transform_edt(cells[box] != idx).astype(np.float32)
        b1 = d1[box]
        b2 = d2[box]
        np.minimum(b2, np.maximum(b1, dist), out=b2)
        np.minimum(b1, dist, out=b1)
    return d1, d2


def _cutoff(w0: float, sigma: float, tol: float) -> float:
    if w0 <= tol:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def border_weight(labels, w0: float = 10.0, sigma: float = 5.0, tol: float = 1e-3) -> np.ndarray:
    """Border term ``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels, float32 (H, W).

    0 on cells, unannotated pixels, where the term is below ``tol``, and everywhere when
    there are fewer than two cells. ``sigma`` and distances in pixels.
    """
    lab = _check(labels)
    out = np.zeros(lab.shape, dtype=np.float32)
    if sigma <= 0:
        raise ValueError("sigma must be > 0")
    radius = _cutoff(w0, sigma, tol)
    if radius <= 0:
        return out
    d1, d2 = two_nearest_distances(lab, max_distance=radius)
    sel = (lab == 1) & (d2 <= radius)
    s = d1[sel].astype(np.float64) + d2[sel]
    out[sel] = w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))
    return out


def class_weights(labels, class_balance: bool = True, n_classes: int = 2, power: float = 1.0,
                  boundary_width: int = 1) -> np.ndarray:
    """Class-balance weight ``w_c`` (float32, (H, W)); 0 on unannotated pixels.

    ``w_c(class)`` is proportional to ``n_class ** -power`` over annotated pixels, scaled so
    that its mean over annotated pixels is 1 (classes: background = label 1, cell = label
    >= 2; with ``n_classes=3`` the cell boundary, :func:`napari_unet.labels.boundary_mask`,
    is a class of its own). ``power=1`` is the paper's frequency balance,
    ``n_annotated / (n_classes_present * n_class)``: each class present has the same total
    weight. ``power=0.5`` (square-root weights) lifts rare classes less, so that a thin
    boundary ring does not get a third of the loss. 1 everywhere annotated if
    ``class_balance`` is False or ``power`` is 0. ``boundary_width``: the boundary class's
    width in pixels, as the training targets have it.
    """
    from .labels import to_classes

    _check_power(power)
    return class_map_weights(to_classes(_check(labels), n_classes, boundary_width), n_classes,
                             power if class_balance else 0.0)


def _check_power(power) -> None:
    if not (math.isfinite(power) and 0 <= power <= 1):
        raise ValueError(f"power must be between 0 and 1, not {power}")


def class_map_weights(classes, n_classes: int, power: float = 1.0) -> np.ndarray:
    """:func:`class_weights` of a class map (int (H, W), -1 where not annotated, as
    :func:`napari_unet.labels.to_classes` makes it), for callers that have one already."""
    _check_power(power)
    cls = np.asarray(classes)
    ann = cls >= 0
    out = np.zeros(cls.shape, dtype=np.float32)
    counts = np.bincount(cls[ann].ravel(), minlength=n_classes).astype(np.float64)
    present = counts > 0
    if power == 0 or not present.any():
        out[ann] = 1.0
        return out
    per_class = np.zeros_like(counts)
    per_class[present] = counts[present] ** -power
    per_class *= counts.sum() / float((counts * per_class).sum())  # mean 1 over annotated pixels
    out[ann] = per_class[cls[ann]]
    return out


def weight_map(
    labels,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_balance: bool = True,
    tol: float = 1e-3,
    n_classes: int = 2,
    class_balance_power: float = 1.0,
) -> np.ndarray:
    """Loss weight map of the U-Net paper, ``w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))``.

    Parameters
    ----------
    labels : (H, W) array of int
        Annotation in the project convention: 0 not annotated, 1 background, 2, 3, ... one
        cell each.
    w0 : float
        Weight of the border term (10 in the paper); 0 leaves the class balance only.
    sigma : float
        Width of the border term in pixels (about 5 in the paper).
    class_balance : bool
        Balance the classes (``w_c``) over the annotated pixels; False gives ``w_c = 1``.
    tol : float
        Border terms below this are not computed (they are nearly 0 far from two cells).
    n_classes : {2, 3}
        3 balances background, cell interior and cell boundary (three-class networks).
    class_balance_power : float
        1 (the paper): each class the same total weight; 0.5: square-root weights
        (:func:`class_weights`).

    Returns
    -------
    (H, W) float32 array
        ``w_c + border`` on annotated pixels (the border term on background pixels only) and
        exactly 0 on unannotated pixels, which the loss therefore ignores.

    Examples
    --------
    Two cells 4 pixels apart: the background between them weighs far more than the
    background far from both, and the unannotated corner weighs nothing.

    >>> import numpy as np
    >>> lab = np.ones((20, 30), np.uint16)
    >>> lab[5:15, 5:13] = 2
    >>> lab[5:15, 17:25] = 3
    >>> lab[0, 0] = 0
    >>> w = weight_map(lab)
    >>> bool(w[10, 15] > 5 * w[18, 2])
    True
    >>> float(w[0, 0])
    0.0
    """
    lab = _check(labels)
    w = class_weights(lab, class_balance=class_balance, n_classes=n_classes, power=class_balance_power)
    if w0 > 0:
        w += border_weight(lab, w0=w0, sigma=sigma, tol=tol)
    return w
