"""Training-label convention of napari-unet and conversions into it.

Label convention (2D integer image, shape (H, W)):

* ``0``  = not annotated: ignored by the loss (weight 0);
* ``1``  = background;
* ``>= 2`` = one cell (object instance) per value. Touching cells painted with
  different values are different cells.

Class index seen by the network (see :func:`to_classes`): label 0 -> -1 (ignored),
label 1 -> class 0 (background), labels >= 2 -> class 1 (cell). A three-class network
(background / cell interior / cell boundary, the strongest U-Net baseline of the StarDist
paper) also gets class 2 for the boundary, derived here only where it is known: a cell pixel
next to background or to another cell, never next to an unannotated pixel.

The paper's two-class U-Net cannot tell apart two cells that touch without a background gap;
:func:`separate_touching` paints a 1-pixel background line between them (as in the paper,
where touching cells are separated by background that the weight map then emphasises).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "from_instances",
    "from_binary",
    "from_membranes",
    "to_classes",
    "boundary_mask",
    "to_instances",
    "separate_touching",
    "validate_labels",
    "integer_labels",
    "labels_dtype",
]


def labels_dtype(max_label: int) -> np.dtype:
    """The dtype of every label image napari-unet makes or writes: uint16 when ``max_label``
    fits, else uint32 (what the label writers promise); ValueError beyond uint32."""
    if max_label <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if max_label <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise ValueError(f"{max_label} labels do not fit in uint32 (the label files' type): label fewer objects, "
                     "e.g. plane by plane")


def integer_labels(labels, name: str = "labels", hint: str = "", *, non_negative: bool = True) -> np.ndarray:
    """``labels`` as an integer array (bool -> uint8, whole-valued floats -> int64), or a
    ValueError naming ``name`` (then ``hint``, what to do) for fractions, NaN or inf, a
    non-numeric type and, with ``non_negative``, negative values."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} hold non-integer values (fractions, NaN or inf){hint}")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer image, got dtype {arr.dtype}")
    if non_negative and arr.size and arr.min() < 0:
        raise ValueError(f"{name} contain negative values (min {arr.min()}){hint}")
    return arr


def _as_integer_2d(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D image (H, W), got shape {arr.shape}")
    return integer_labels(arr, name, non_negative=False)


def from_instances(instances) -> np.ndarray:
    """Instance mask (0 = background, k > 0 = object k), shape (H, W) -> convention.

    Every pixel becomes annotated: 0 -> 1 (background), k -> k + 1 (cell).
    Returns uint16 when the largest id fits, else uint32.
    """
    inst = _as_integer_2d(instances, "instances")
    if inst.size and inst.min() < 0:
        raise ValueError("instance ids must be >= 0 (0 = background)")
    top = int(inst.max()) + 1 if inst.size else 1
    if top > np.iinfo(np.uint32).max:
        raise ValueError("instance ids too large; relabel them (e.g. skimage.segmentation.relabel_sequential)")
    out = inst.astype(labels_dtype(top))
    out += 1
    return out


def from_binary(mask, connectivity: int = 1) -> np.ndarray:
    """Foreground mask (bool or 0 / non-zero), shape (H, W) -> convention.

    Each connected component of the foreground (``connectivity`` 1 = 4-neighbours,
    2 = 8-neighbours) becomes its own cell (ids 2, 3, ...); the rest is background 1.
    Returns uint16 or uint32.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2D image (H, W), got shape {mask.shape}")
    structure = ndi.generate_binary_structure(2, connectivity)
    comp, n = ndi.label(mask != 0, structure=structure)
    return from_instances(comp.astype(labels_dtype(n + 1), copy=False))


def from_membranes(image, interior_value=255) -> np.ndarray:
    """ISBI 2012 style membrane map -> convention.

    ``image`` (H, W): ``interior_value`` (default 255) = cell interior, anything else
    (0 in ISBI) = membrane. Membrane pixels become background 1; each 4-connected
    interior region becomes its own cell (ids >= 2). Returns uint16 or uint32.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"membrane image must be 2D (H, W), got shape {image.shape}")
    return from_binary(image == interior_value, connectivity=1)


def boundary_mask(labels, width: int = 1) -> np.ndarray:
    """Cell pixels within ``width`` pixels (8-neighbourhood steps) of a *known* other region.

    A cell pixel (label >= 2) is on the boundary when a pixel within ``width`` steps is
    background (1) or another cell; unannotated neighbours (0) and the image border do not
    count, since what lies there is unknown. Returns bool (H, W).
    """
    lab = _as_integer_2d(labels, "labels")
    if width < 1:
        raise ValueError("boundary width must be at least 1 pixel")
    h, w = lab.shape
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]

    def around(a):
        p = np.pad(a, 1, mode="constant", constant_values=0)
        return [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in shifts]

    edge = np.zeros(lab.shape, dtype=bool)
    for nb in around(lab):
        edge |= (nb != lab) & (nb != 0)
    edge &= lab >= 2
    neighbours = around(lab)
    for _ in range(width - 1):  # grow inwards, within the same cell
        grown = edge.copy()
        for nb_lab, nb_edge in zip(neighbours, around(edge)):
            grown |= nb_edge & (nb_lab == lab)
        edge = grown & (lab >= 2)
    return edge


def to_classes(labels, n_classes: int = 2, boundary_width: int = 1, unknown_rims: bool = True) -> np.ndarray:
    """Convention labels (H, W) -> int64 class map, -1 where not annotated.

    ``n_classes=2`` (the paper): 0 background, 1 cell. ``n_classes=3``: 0 background,
    1 cell interior, 2 cell boundary (:func:`boundary_mask` of ``boundary_width`` pixels).
    With three classes, a cell's rim next to unannotated pixels (within ``boundary_width``
    steps, not next to a known other region) is -1 too when ``unknown_rims`` is true: whether
    the cell ends there (boundary) or the painting does (interior) is not known, and teaching
    "interior" there erodes the boundary class of a fine-tuned network, so that touching cells
    merge. ``unknown_rims=False`` labels such rims interior.
    """
    if n_classes not in (2, 3):
        raise ValueError(f"labels convert to 2 or 3 classes, not {n_classes}")
    lab = _as_integer_2d(labels, "labels")
    classes = np.full(lab.shape, -1, dtype=np.int64)
    classes[lab == 1] = 0
    classes[lab >= 2] = 1
    if n_classes == 3:
        edge = boundary_mask(lab, boundary_width)
        classes[edge] = 2
        if unknown_rims and (lab == 0).any():
            near = ndi.binary_dilation(lab == 0, structure=np.ones((3, 3), bool), iterations=boundary_width)
            classes[near & (lab >= 2) & ~edge] = -1
    return classes


def to_instances(labels) -> np.ndarray:
    """Convention labels (H, W) -> instance mask: 0 for background and unannotated, k - 1 for cell k.

    Inverse of :func:`from_instances` on fully annotated images. Same dtype as the input
    for unsigned input, else int64.
    """
    lab = _as_integer_2d(labels, "labels")
    out = np.where(lab >= 2, lab - 1, 0)
    return out.astype(lab.dtype if np.issubdtype(lab.dtype, np.unsignedinteger) else np.int64)


def separate_touching(labels, connectivity: int = 2) -> np.ndarray:
    """Paint background (1) between touching cells so that no two cells are adjacent.

    A cell pixel with a ``connectivity``-neighbour (1 = 4-, 2 = 8-neighbours) belonging to a
    cell of larger id becomes background, leaving a line of >= 1 px between any two cells.
    Unannotated pixels (0) and background stay as they are. Returns a copy, same dtype.
    """
    lab = _as_integer_2d(labels, "labels")
    cells = np.where(lab >= 2, lab, 0)
    footprint = ndi.generate_binary_structure(2, connectivity)
    larger = ndi.maximum_filter(cells, footprint=footprint, mode="constant", cval=0)
    touch = (cells >= 2) & (larger > cells)
    out = lab.copy()
    out[touch] = 1
    return out


def validate_labels(labels) -> np.ndarray:
    """Check that ``labels`` follows the convention; return it as an integer array (H, W).

    Raises ValueError (what is wrong and what to do) for: not 2D, non-integer values,
    negative values, or nothing annotated (all 0).
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(
            f"labels must be a single 2D image (H, W), got shape {arr.shape}; "
            "pick one plane/slice, or split a stack into one label image per image"
        )
    arr = integer_labels(arr, "labels", "; use a Labels layer or an integer image: 0 = not annotated, "
                                        "1 = background, 2, 3, ... = cells")
    if not np.any(arr > 0):
        raise ValueError(
            "nothing is annotated (all pixels are 0); paint background with 1 and each cell "
            "with its own value >= 2, or convert an instance/binary mask with "
            "from_instances / from_binary"
        )
    return arr
