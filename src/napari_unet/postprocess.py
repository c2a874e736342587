"""From probabilities to instance labels (0 = background, 1..n = objects)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from dataclasses import replace as dc_replace

import numpy as np
from scipy import ndimage as ndi

from .labels import labels_dtype

__all__ = ["PostProcessing", "labels_from_probabilities", "labels_from_classes", "labels_from_model_output",
           "foreground_of", "check_postprocessing"]

#: planes with more pixels than this are labelled block by block (blocks of LABEL_BLOCK pixels)
LARGE_PLANE = 4096 * 4096
LABEL_BLOCK = 2048


def _probability(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) \
            or not 0 <= v <= 1:
        raise ValueError(f"{name} must be a probability between 0 and 1, not {v!r}")
    return float(v)


def _pixels(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or v != v or v < 0 or v != int(v):
        raise ValueError(f"{name} must be a whole number of pixels >= 0, not {v!r}")
    return int(v)


def _sigma(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a number of pixels >= 0, not {v!r}")
    return float(v)


def _flag(name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, not {v!r}")
    return bool(v)


_CHECKS = {"threshold": _probability, "seed_threshold": _probability, "min_size": _pixels, "smooth": _sigma,
           "fill_holes": _flag}


def check_postprocessing(params: dict) -> dict:
    """Validate post-processing settings (from a model header, the command line or a widget);
    return them with proper types, or raise ValueError naming the setting and its value.

    ``threshold`` and ``seed_threshold`` are probabilities in [0, 1]; ``min_size`` a whole
    number of pixels >= 0; ``smooth`` a finite number >= 0; ``fill_holes`` true/false. None
    values and other keys are returned unchanged."""
    return {k: (_CHECKS[k](k, v) if k in _CHECKS and v is not None else v) for k, v in params.items()}


@dataclass(frozen=True)
class PostProcessing:
    """How a model's probabilities become instance labels; stored with the model (the
    ``postprocessing`` of its header) and used by :func:`labels_from_model_output`.

    ``threshold``: foreground probability above which a pixel belongs to an object.
    ``seed_threshold``: with a value above ``threshold``, the confident cores above it seed a
    watershed that splits touching objects (None: no split; three-class models always split,
    from interior cores above 0.5 by default). ``min_size``: objects with fewer pixels are
    removed. ``smooth``: Gaussian sigma (pixels) applied to the probabilities first.
    ``fill_holes``: fill holes inside objects. See :func:`labels_from_probabilities`.
    """

    threshold: float = 0.5
    seed_threshold: float | None = None
    min_size: int = 0
    smooth: float = 0.0
    fill_holes: bool = False

    def __post_init__(self):
        for name, check in _CHECKS.items():
            v = getattr(self, name)
            if v is not None or name != "seed_threshold":
                object.__setattr__(self, name, check(name, v))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(_CHECKS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> PostProcessing:
        """From a header's dict: missing (or None) settings take the defaults; keys this version
        does not know (written by a newer one) are ignored."""
        return cls().replace(**{k: v for k, v in (d or {}).items() if k in _CHECKS})

    @classmethod
    def coerce(cls, value) -> PostProcessing:
        """``value`` itself, or a :class:`PostProcessing` made from a dict (or None: defaults)."""
        if isinstance(value, cls):
            return value
        if value is None or isinstance(value, dict):
            return cls.from_dict(value)
        raise ValueError(f"postprocessing must be a PostProcessing or a dict, not {type(value).__name__}")

    def replace(self, **overrides) -> PostProcessing:
        """A copy with ``overrides`` (None keeps the current value; an unknown name is refused)."""
        unknown = sorted(set(overrides) - set(_CHECKS))
        if unknown:
            raise ValueError(f"unknown post-processing setting {unknown[0]!r}: use {', '.join(_CHECKS)}")
        return dc_replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def splits_touching(self) -> bool:
        """Whether a two-class model's labels split touching objects (seeded watershed)."""
        return self.seed_threshold is not None and self.seed_threshold > self.threshold


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

    Examples
    --------
    Two objects joined by a bridge of lower probability are one object at ``threshold``
    alone, and two once a ``seed_threshold`` above the bridge splits them:

    >>> import numpy as np
    >>> fg = np.zeros((20, 40), np.float32)
    >>> fg[5:15, 3:15] = 0.9
    >>> fg[5:15, 18:35] = 0.8
    >>> fg[9:11, 15:18] = 0.6
    >>> int(labels_from_probabilities(fg, threshold=0.5).max())
    1
    >>> int(labels_from_probabilities(fg, threshold=0.5, seed_threshold=0.7).max())
    2
    """
    p = check_postprocessing(dict(threshold=threshold, seed_threshold=seed_threshold, min_size=min_size,
                                  smooth=smooth, fill_holes=bool(fill_holes)))
    threshold, seed_threshold, min_size, smooth = p["threshold"], p["seed_threshold"], p["min_size"], p["smooth"]
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
    return lut[lab].astype(labels_dtype(ids.size))


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


def labels_from_model_output(probabilities: np.ndarray, model, **overrides) -> np.ndarray:
    """Instance labels for every plane of class ``probabilities`` ``(K, *stack, Y, X)`` with
    ``model``'s :class:`PostProcessing`, overridable by keyword (None keeps the model's value);
    ids are unique over the stack. Planes larger than ``LARGE_PLANE`` pixels are labelled block
    by block (:func:`napari_unet.blockwise.label_blockwise`), so that labelling needs no
    whole-plane temporaries."""
    params = model.postprocessing.replace(**overrides).to_dict()
    K = probabilities.shape[0]
    shape = probabilities.shape[1:]
    flat = probabilities.reshape((K, -1) + shape[-2:])
    labs = []
    offset = 0
    for i in range(flat.shape[1]):
        plane = flat[:, i]
        if plane.shape[-2] * plane.shape[-1] > LARGE_PLANE:
            # block by block, ids merged across block faces: no whole-plane temporaries
            # (8192x8192: 344 MiB instead of 1923 MiB, the same objects; docs/large_images.md)
            from .blockwise import label_blockwise

            lab = label_blockwise(plane, model, block=LABEL_BLOCK, **params).astype(np.uint32, copy=False)
        else:
            lab = labels_from_classes(plane, model.foreground_class, **params).astype(np.uint32)
        lab[lab > 0] += offset
        offset = int(lab.max()) if lab.max() > 0 else offset
        labs.append(lab)
    labels = np.stack(labs).reshape(shape)
    return labels.astype(labels_dtype(offset), copy=False)
