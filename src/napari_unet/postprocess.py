"""From probabilities to instance labels (0 = background, 1..n = objects)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["labels_from_probabilities", "labels_from_classes", "foreground_of"]


def _smallest_uint(n: int):
    return np.uint16 if n < 2**16 else np.uint32


def labels_from_probabilities(
    foreground: np.ndarray,
    threshold: float = 0.5,
    seed_threshold: float | None = None,
    min_size: int = 0,
    smooth: float = 0.0,
    fill_holes: bool = False,
    seed_map: np.ndarray | None = None,
) -> np.ndarray:
    """Instance labels from a 2D foreground probability map.

    Pixels above ``threshold`` are foreground; connected components (4-connectivity, so that a
    one-pixel diagonal boundary still separates two objects) become objects. With
    ``seed_threshold`` (> ``threshold``), components of the confident core
    ``foreground > seed_threshold`` seed a watershed on the probability, which splits touching
    objects joined by a thin bridge of lower probability. ``smooth`` (pixels) blurs the map
    first with a Gaussian, which keeps textured objects (nuclei with dark nucleoli) in one
    piece; ``fill_holes`` fills holes inside objects. Objects under ``min_size`` pixels are
    removed. Returns uint16 (uint32 when there are 65535 objects or more).

    ``seed_map`` (same shape) seeds the watershed from its components above
    ``seed_threshold`` instead of the foreground's own core: three-class networks give the
    cell-interior probability here, so that cells touching along a predicted boundary grow
    back apart from their interiors (see :func:`labels_from_classes`).
    """
    fg = np.asarray(foreground, dtype=np.float32)
    if fg.ndim != 2:
        raise ValueError(f"labels_from_probabilities takes a 2D map, got shape {fg.shape}")
    if smooth and smooth > 0:
        fg = ndi.gaussian_filter(fg, float(smooth))
    mask = fg > threshold
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if seed_map is not None:
        core = np.asarray(seed_map, dtype=np.float32)
        if core.shape != fg.shape:
            raise ValueError(f"seed_map of shape {core.shape} does not match the foreground's {fg.shape}")
        if smooth and smooth > 0:
            core = ndi.gaussian_filter(core, float(smooth))
        seed_threshold = 0.5 if seed_threshold is None else seed_threshold
        use_seeds = True
    else:
        core = fg
        use_seeds = seed_threshold is not None and seed_threshold > threshold
    if use_seeds:
        from skimage.segmentation import watershed

        seeds, n = ndi.label((core > seed_threshold) & mask)
        if n:
            lab = watershed(-core, seeds, mask=mask, connectivity=1)
            # foreground regions without any confident core keep their own label
            rest, m = ndi.label(mask & (lab == 0))
            lab = np.where(rest > 0, rest + n, lab)
        else:
            lab, _ = ndi.label(mask)
    else:
        lab, _ = ndi.label(mask)
    if min_size > 1 and lab.max() > 0:
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = False
        lab[small[lab]] = 0
    # sequential relabelling
    ids = np.unique(lab)
    ids = ids[ids > 0]
    lut = np.zeros(int(lab.max()) + 1, dtype=np.int64)
    lut[ids] = np.arange(1, ids.size + 1)
    return lut[lab].astype(_smallest_uint(ids.size))


def foreground_of(probabilities: np.ndarray, foreground_class: int = 1) -> np.ndarray:
    """Foreground probability from class probabilities ``(K, ...)``: the foreground class of a
    two-class network; interior + boundary (= 1 - background) of a three-class one."""
    if probabilities.shape[0] == 3:
        return probabilities[1] + probabilities[2]
    return probabilities[foreground_class]


def labels_from_classes(
    probabilities: np.ndarray,
    foreground_class: int = 1,
    threshold: float = 0.5,
    seed_threshold: float | None = None,
    min_size: int = 0,
    smooth: float = 0.0,
    fill_holes: bool = False,
) -> np.ndarray:
    """Instance labels from the class probabilities ``(K, H, W)`` of one plane.

    Two classes (the paper): :func:`labels_from_probabilities` on the foreground class.
    Three classes (background, interior, boundary): the foreground is interior + boundary
    above ``threshold``; components of interior probability above ``seed_threshold``
    (default 0.5) seed a watershed that grows each cell over its boundary.
    """
    p = np.asarray(probabilities)
    if p.ndim != 3:
        raise ValueError(f"labels_from_classes takes (classes, H, W), got shape {p.shape}")
    kw = dict(threshold=threshold, seed_threshold=seed_threshold, min_size=min_size, smooth=smooth,
              fill_holes=fill_holes)
    if p.shape[0] == 3:
        return labels_from_probabilities(p[1] + p[2], seed_map=p[1], **kw)
    return labels_from_probabilities(p[foreground_class], **kw)
