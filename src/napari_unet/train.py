"""Training and fine-tuning from few, partial annotations (the paper's second half).

Labels follow the project convention (see :mod:`napari_unet.labels`): 0 = not annotated
(ignored), 1 = background, >= 2 = one cell each. The loss is the paper's pixel-wise softmax
cross-entropy weighted by its weight map (class balance + border term between touching
cells); unannotated pixels weigh 0 in it. Tiles are centred on painted pixels, every painted
class (and the gaps between painted cells) equally often however few pixels it has, so a few
strokes on one large image train as well as a folder of fully labelled ones.

Fine-tuning a trained model (see :attr:`TrainingConfig.fine_tune`) adds two safeguards
(docs/training.md):

* distillation: on pixels nobody painted, the start model's own probabilities stay a soft
  target (a frozen copy of it, KL divergence), weighted by how far the pixel is from the
  strokes and how confident the start model was, so the strokes correct what they touch and
  what looks like it while the rest stays as it was;
* never worse than the start: part of the painted objects is held out (when no validation
  data is given), the start model is scored on it first, and the best iteration by that
  score, the start model included, is what is returned.

The loop is plain Python: ``callback`` receives a :class:`Progress` after every iteration
(the napari widget plots it; the command line shows a tqdm bar), ``cancel`` stops it within one
iteration, and the best model so far is what is returned and, with ``checkpoint``, what is on
disk.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .augment import augment, microscope, rescale
from .device import resolve_device
from .labels import separate_touching, to_classes, validate_labels
from .model import alignment, output_size, valid_input_size
from .modelfile import SegmentationModel, save_model
from .predict import resolve_precision
from .tiling import reflect_index
from .weightmap import border_weight, class_weights

__all__ = [
    "TrainingConfig",
    "Progress",
    "TrainingResult",
    "train",
    "validation_scores",
    "check_annotations",
    "holdout_split",
    "distillation_weight",
    "weighted_cross_entropy",
    "matched_cell_scores",
]


@dataclass
class TrainingConfig:
    """Settings of :func:`train`; every departure from the paper is an option.

    ``optimizer="sgd"`` with ``momentum=0.99``, ``batch_size=1`` and a large ``tile`` is the
    paper's recipe. The default is Adam with a cosine-decayed learning rate (see
    docs/training.md for the comparison). ``precision="auto"`` trains under bfloat16 autocast
    (float32 master weights) where the hardware runs bfloat16 natively, float32 elsewhere.
    :meth:`for_strokes` gives the defaults measured for fine-tuning from a few strokes.

    Fine-tuning options (used when ``fine_tune`` is true; ``None`` = true for a model that has
    been trained before, i.e. whose provenance records training (``trained_from``,
    ``training``, ``training_data`` or ``source``), false for a new network):
    ``distillation`` weighs the KL divergence to the start model on unpainted pixels (0 = off),
    ramping up with the distance from the strokes over ``distill_distance`` pixels and scaled
    by the start model's confidence (``distill_confidence``); ``free_tiles`` is the fraction of
    tiles centred anywhere in the images rather than on painted pixels; ``holdout`` is the
    fraction of painted objects held out to score the iterations against the start model when
    no validation data is given (0 = none: then the best iteration is chosen on the painted
    pixels themselves). ``holdout_score="objects"`` scores the held-out cells as objects (each
    counts the IoU of the predicted object that matches it above ``match_iou``, 0 when it is
    lost, merged with a neighbour or split) and the held-out background by pixel agreement;
    ``"pixels"`` by per-class pixel IoU, which cannot see merged cells.
    ``train_layers="decoder"`` freezes the contracting path.
    """

    iterations: int = 500
    tile: int = 428  # input tile edge (rounded to a valid size); 428 -> 244 output pixels
    batch_size: int = 1
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-3
    momentum: float = 0.99  # SGD only (the paper's value)
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # "cosine" or "constant"
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    separate_touching: bool = True  # train a 1-px background gap where two cells touch
    elastic: bool = True
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    max_rotation: float = 15.0
    max_shift: float = 0.0
    max_scale: float = 0.1
    intensity: bool = True
    # beyond the paper: magnification changes and what real microscopes do to images
    # (augment.microscope); off by default for fine-tuning on the user's own images, on for
    # the built-in models (scripts/builtin_models.py, docs/models.md)
    max_zoom: float = 1.0  # magnification drawn log-uniformly in [1/max_zoom, max_zoom]
    microscope: float = 0.0  # probability that a tile gets augment.microscope
    boundary_width: int = 1  # three-class networks: boundary class width in pixels
    workers: int = 0  # processes preparing tiles (0: in the training loop, reproducible)
    validate_every: int = 50
    seed: int = 0
    precision: str = "auto"  # "float32", "bfloat16" (autocast + channels_last), or auto: bf16 where native
    device: str = "auto"
    stratify: bool = True  # tile centres drawn per painted class (and cell gaps), not per pixel
    fine_tune: bool | None = None  # None: fine-tuning when the model has been trained before
    distillation: float = 1.0  # weight of the KL term to the frozen start model (fine-tuning only)
    distill_distance: float = 8.0  # pixels: the KL weight ramps from 0 at a stroke to ~1 at twice this
    distill_confidence: bool = True  # scale the KL weight by the start model's confidence
    free_tiles: float = 0.25  # fine-tuning with distillation: share of tiles centred anywhere
    holdout: float = 0.2  # fine-tuning without validation data: share of painted objects held out
    holdout_score: str = "objects"  # "objects": held-out cells matched as objects; "pixels": per-class pixel IoU
    match_iou: float = 0.5  # "objects": a held-out cell counts when one predicted object overlaps it above this IoU
    train_layers: str = "all"  # "all" or "decoder" (contracting path frozen)

    def __post_init__(self):
        for name in ("iterations", "tile", "batch_size", "validate_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {v!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ValueError(
                f"learning_rate must be above 0 and at most 1, not {self.learning_rate}: larger steps diverge "
                "(usual values 1e-4 to 1e-2)"
            )
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), not {self.momentum}")
        if not (math.isfinite(self.w0) and self.w0 >= 0 and math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"w0 must be >= 0 and sigma > 0 (got w0={self.w0}, sigma={self.sigma})")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError("lr_schedule must be 'cosine' or 'constant'")
        if self.max_zoom < 1:
            raise ValueError("max_zoom must be >= 1 (1 = no magnification change)")
        if not 0 <= self.microscope <= 1:
            raise ValueError("microscope is a probability, between 0 and 1")
        if self.distillation < 0 or self.distill_distance < 0:
            raise ValueError("distillation and distill_distance must be >= 0")
        if not 0 <= self.free_tiles < 1:
            raise ValueError("free_tiles must be in [0, 1)")
        if not 0 <= self.holdout < 1:
            raise ValueError("holdout must be in [0, 1)")
        if self.holdout_score not in ("objects", "pixels"):
            raise ValueError("holdout_score must be 'objects' or 'pixels'")
        if not 0 < self.match_iou < 1:
            raise ValueError("match_iou must be in (0, 1)")
        if self.train_layers not in ("all", "decoder"):
            raise ValueError("train_layers must be 'all' or 'decoder'")

    @classmethod
    def for_strokes(cls, **overrides) -> "TrainingConfig":
        """The defaults measured for fine-tuning a trained model from a few painted strokes
        (docs/training.md), with ``overrides`` applied."""
        base = dict(STROKE_DEFAULTS)
        base.update(overrides)
        return cls(**base)


#: fine-tuning from strokes: chosen by measurement (docs/training.md, "Defaults for strokes")
STROKE_DEFAULTS = dict(iterations=150, learning_rate=1e-4, tile=252, validate_every=25, fine_tune=True)


@dataclass
class Progress:
    """What the loop reports after each iteration."""

    iteration: int
    iterations: int
    loss: float
    learning_rate: float
    validation_score: float | None = None  # set on iterations where validation ran
    best_score: float | None = None
    seconds: float = 0.0


@dataclass
class TrainingResult:
    """What :func:`train` returns. ``best_iteration`` 0 means the start model was kept
    (``kept_start``); ``start_score`` is its held-out or validation score; ``warnings`` are
    the plain-words remarks on the painting (also issued with :func:`warnings.warn`)."""

    model: SegmentationModel
    history: list[Progress] = field(default_factory=list)
    best_iteration: int = 0
    best_score: float | None = None
    cancelled: bool = False
    seconds: float = 0.0
    start_score: float | None = None
    kept_start: bool = False
    warnings: list[str] = field(default_factory=list)
    scored_on: str = ""  # "validation", "held-out strokes", "painted pixels" or "training loss"
    checkpoint: Path | None = None  # the file this run wrote (None if it wrote none)


# --------------------------------------------------------------------------- annotation checks


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


def _objects(labels_list):
    """Painted objects: each cell (one label value >= 2) and each 8-connected background stroke."""
    bg, cells, comps = [], [], []
    for i, lab in enumerate(labels_list):
        a = np.asarray(lab)
        comp, n = ndi.label(a == 1, structure=np.ones((3, 3), bool))
        comps.append(comp)
        bg += [(i, k) for k in range(1, n + 1)]
        cells += [(i, int(v)) for v in np.unique(a[a >= 2])]
    return bg, cells, comps


def holdout_split(labels_list, fraction: float = 0.2, seed: int = 0, min_objects: int = 4):
    """Split painted labels into a training part and a held-out part, by whole objects.

    Objects are the painted cells (one label value >= 2 each) and the background strokes
    (8-connected pieces of label 1). For cells and for background separately: when at least
    ``min_objects`` were painted, ``round(fraction * n)`` of them (at least one), drawn at
    random with ``seed``, are held out; with fewer, none of that kind is. Returns
    ``(train_labels, held_labels)``, two lists shaped like the input: held-out pixels are 0 in
    the first, all other pixels 0 in the second.
    """
    rng = np.random.default_rng(seed)
    bg, cells, comps = _objects(labels_list)
    held = [np.zeros(np.shape(lab), bool) for lab in labels_list]
    for objs, is_bg in ((bg, True), (cells, False)):
        if fraction <= 0 or len(objs) < min_objects:
            continue
        k = max(1, int(round(fraction * len(objs))))
        for j in rng.choice(len(objs), size=k, replace=False):
            i, v = objs[j]
            held[i] |= (comps[i] == v) if is_bg else (np.asarray(labels_list[i]) == v)
    train_l = [np.where(h, 0, np.asarray(lab)).astype(np.asarray(lab).dtype) for h, lab in zip(held, labels_list)]
    held_l = [np.where(h, np.asarray(lab), 0).astype(np.asarray(lab).dtype) for h, lab in zip(held, labels_list)]
    return train_l, held_l


def distillation_weight(painted: np.ndarray, probabilities: np.ndarray | None, distance: float = 8.0,
                        confidence: bool = True) -> np.ndarray:
    """Weight (float32, (H, W)) of the distillation term at each pixel.

    0 on painted pixels; elsewhere ``1 - exp(-d**2 / (2 * distance**2))`` with ``d`` the
    distance in pixels to the nearest painted pixel (so the strokes decide near them and the
    start model far from them; ``distance=0``: 1 everywhere unpainted), times the start
    model's confidence ``(p_max - 1/K) / (1 - 1/K)`` when ``confidence`` (its ``K`` class
    ``probabilities``, shape (K, H, W)).
    """
    painted = np.asarray(painted, bool)
    if distance > 0 and painted.any():
        d = ndi.distance_transform_edt(~painted)
        w = -np.expm1(-(d * d) / (2.0 * distance * distance))
    else:
        w = (~painted).astype(np.float64)
    if confidence and probabilities is not None:
        k = probabilities.shape[0]
        conf = (probabilities.max(axis=0) - 1.0 / k) / (1.0 - 1.0 / k)
        w = w * np.clip(conf, 0.0, 1.0)
    return np.where(painted, 0.0, w).astype(np.float32)


class _Example:
    """One normalised image with its labels, classes, weights and sampling strata."""

    def __init__(self, image: np.ndarray, labels: np.ndarray, model: SegmentationModel, cfg: TrainingConfig,
                 channel_axis=None):
        from .predict import as_planes

        planes, lead = as_planes(image, model.in_channels, channel_axis)
        if planes.shape[0] != 1:
            raise ValueError(
                f"training takes 2D images; got a stack of {planes.shape[0]} planes (shape {np.shape(image)}): "
                "give the planes one by one"
            )
        img = np.asarray(planes[0], dtype=np.float32)
        n_bad = img.size - int(np.count_nonzero(np.isfinite(img)))
        if n_bad:
            warnings.warn(
                f"{n_bad} of {img.size} pixels of a training image are NaN or infinite: treated as missing data "
                "(filled with the image's dark level, and not trained on)",
                stacklevel=3,
            )
            lab_ = np.asarray(labels)
            if lab_.shape == img.shape[-2:]:
                labels = np.where(np.isfinite(img).all(axis=0), lab_, 0).astype(lab_.dtype)
        lab = np.asarray(labels)
        if lab.shape != img.shape[-2:]:
            raise ValueError(f"labels of shape {lab.shape} do not match the image's {img.shape[-2:]}")
        self.raw = img
        self.image = model.normalization(img)
        self.n_classes = model.config.n_classes
        self.shape = lab.shape
        self.teacher = None  # the start model's probabilities (K, H, W) when fine-tuning
        self.distill = None  # distillation weight (H, W)
        self.set_labels(lab, cfg)

    def set_labels(self, lab: np.ndarray, cfg: TrainingConfig) -> None:
        lab = np.asarray(lab)
        if cfg.separate_touching and lab.any() and self.n_classes == 2:
            # a two-class network can only keep touching cells apart if it is taught to draw the
            # background line between them (the paper's ground truth has such lines); a
            # three-class network has its boundary class for that
            lab = separate_touching(lab)
        self.labels = lab
        # targets are made on the whole image, where it is known what lies next to a cell
        self.classes = (to_classes(lab, self.n_classes, cfg.boundary_width) if lab.any()
                        else np.full(lab.shape, -1, np.int64))
        border = border_weight(lab, w0=cfg.w0, sigma=cfg.sigma) if cfg.w0 > 0 and lab.any() else None
        self.weights = (class_weights(lab, class_balance=cfg.class_balance, n_classes=self.n_classes) if lab.any()
                        else np.zeros(lab.shape, np.float32))
        if border is not None:
            self.weights += border
        self.annotated = np.flatnonzero(self.classes.ravel() >= 0)
        # tile-centre strata: every painted class, and the background gaps between painted cells
        self.strata = {}
        flat = self.classes.ravel()
        for c in np.unique(flat[flat >= 0]):
            self.strata[f"class {int(c)}"] = np.flatnonzero(flat == c)
        if border is not None and np.any(border > 1.0):
            self.strata["gaps"] = np.flatnonzero(border.ravel() > 1.0)


def _check_training_memory(model, t_in: int, batch_size: int, precision: str, device) -> None:
    """Refuse a tile x batch whose activations (kept for the backward pass) cannot fit, before
    the first iteration allocates them."""
    from .predict import peak_bytes_per_pixel

    need = t_in * t_in * batch_size * peak_bytes_per_pixel(model.config, precision, training=True)
    what = f"training on tiles of {t_in}x{t_in} pixels in batches of {batch_size}"
    way_out = "use a smaller --tile or --batch-size"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise ValueError(f"{what} needs about {need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB are "
                             f"free: {way_out}")
    elif device.type == "cpu":
        from .memory import check_memory

        check_memory(need, what, way_out)


def _input_tile(model: SegmentationModel, tile: int) -> tuple[int, int]:
    cfg = model.config
    t = valid_input_size(cfg, tile)
    out = output_size(cfg, t) if cfg.padding == "valid" else t
    return t, out


def _sample(ex: _Example, cy: int, cx: int, t_in: int, t_out: int, rng: np.random.Generator, cfg: TrainingConfig):
    """A training tile centred near ``(cy, cx)``: image (C, t_in, t_in), classes (-1 = not
    painted), loss weights, distillation weights and the start model's probabilities (or None)
    on the (t_out, t_out) output. All arrays follow the image through the same augmentation:
    an index map is warped with it and every per-pixel array is read through it."""
    H, W = ex.shape
    jitter = t_out // 4
    cy += int(rng.integers(-jitter, jitter + 1))
    cx += int(rng.integers(-jitter, jitter + 1))
    zoom = math.exp(rng.uniform(-math.log(cfg.max_zoom), math.log(cfg.max_zoom))) if cfg.max_zoom > 1 else 1.0
    size = max(8, int(round(t_in / zoom)))  # source window shown as t_in pixels
    y0, x0 = cy - size // 2, cx - size // 2
    ys = reflect_index(np.arange(y0, y0 + size), H)
    xs = reflect_index(np.arange(x0, x0 + size), W)
    img = ex.image[:, ys][:, :, xs]
    idx = ys[:, None] * W + xs[None, :]
    if size != t_in:
        img, idx = rescale(img, idx, size=t_in)
    img, idx = augment(
        img, idx, rng=rng, elastic=cfg.elastic, grid=cfg.elastic_grid, sigma=cfg.elastic_sigma,
        max_rotation=cfg.max_rotation, max_shift=cfg.max_shift, max_scale=cfg.max_scale, intensity=cfg.intensity,
    )
    if cfg.microscope and rng.random() < cfg.microscope:
        img = microscope(img, rng, background=ex.classes.ravel()[idx] == 0)
    m = (t_in - t_out) // 2
    idx = idx[m : m + t_out, m : m + t_out]
    cls = ex.classes.ravel()[idx]
    wts = np.where(cls < 0, 0.0, ex.weights.ravel()[idx]).astype(np.float32)
    dw = ex.distill.ravel()[idx] if ex.distill is not None else None
    tp = ex.teacher.reshape(ex.teacher.shape[0], -1)[:, idx] if ex.teacher is not None else None
    return img.astype(np.float32), np.maximum(cls, 0), wts, dw, tp


class _Sampler:
    """Tile centres: class-stratified (each painted class and the cell gaps as often as each
    other, however few pixels they have), plus a share of free tiles anywhere when distilling."""

    def __init__(self, examples: list[_Example], cfg: TrainingConfig, free: float):
        self.examples = examples
        self.cfg = cfg
        self.free = free
        areas = np.array([e.shape[0] * e.shape[1] for e in examples], float)
        self.area_p = areas / areas.sum()
        n_ann = np.array([e.annotated.size for e in examples], float)
        self.ann_p = np.sqrt(n_ann) / np.sqrt(n_ann).sum()  # big images more often, small ones still seen
        self.keys = sorted({k for e in examples for k in e.strata})
        self.key_p = {}
        for k in self.keys:
            n = np.array([e.strata[k].size if k in e.strata else 0 for e in examples], float)
            self.key_p[k] = np.sqrt(n) / np.sqrt(n).sum()

    def __call__(self, rng: np.random.Generator):
        if self.free and rng.random() < self.free:
            i = int(rng.choice(len(self.examples), p=self.area_p))
            H, W = self.examples[i].shape
            return i, int(rng.integers(H)), int(rng.integers(W))
        if self.cfg.stratify:
            k = self.keys[int(rng.integers(len(self.keys)))]
            i = int(rng.choice(len(self.examples), p=self.key_p[k]))
            pool = self.examples[i].strata[k]
        else:
            i = int(rng.choice(len(self.examples), p=self.ann_p))
            pool = self.examples[i].annotated
        idx = int(pool[rng.integers(pool.size)])
        return (i, *divmod(idx, self.examples[i].shape[1]))


# --------------------------------------------------------------------------- scoring on held-out strokes


@dataclass
class _Region:
    example: int
    y0: int
    x0: int
    truth: np.ndarray  # classes (h, w), -1 = not scored


def _regions_of(ex_index: int, classes: np.ndarray, chunk: int = 256, pad: int = 4) -> list[_Region]:
    """Windows (at most ``chunk`` pixels a side) covering the scored pixels of ``classes``."""
    out = []
    H, W = classes.shape
    comp, n = ndi.label(classes >= 0, structure=np.ones((3, 3), bool))
    for sl in ndi.find_objects(comp):
        if sl is None:
            continue
        ya, yb = max(sl[0].start - pad, 0), min(sl[0].stop + pad, H)
        xa, xb = max(sl[1].start - pad, 0), min(sl[1].stop + pad, W)
        for y in range(ya, yb, chunk):
            for x in range(xa, xb, chunk):
                t = classes[y : min(y + chunk, yb), x : min(x + chunk, xb)]
                if (t >= 0).any():
                    out.append(_Region(ex_index, y, x, t.copy()))
    # windows of neighbouring objects overlap: score every pixel once
    seen = {}
    for r in out:
        h, w = r.truth.shape
        m = seen.setdefault(r.example, np.zeros((H, W), bool))
        block = m[r.y0 : r.y0 + h, r.x0 : r.x0 + w]
        r.truth = np.where(block, -1, r.truth)
        block |= r.truth >= 0
    return [r for r in out if (r.truth >= 0).any()]


def _stand_ins(examples: list[_Example], far_from_strokes: list[np.ndarray], cls: int, rng: np.random.Generator,
               n: int = 4, size: int = 48) -> list[_Region]:
    """Windows of pixels the start model is sure belong to class ``cls`` (p > 0.9) and far from
    any stroke (``far_from_strokes`` masks): the start model's answer is the reference there, so
    that a model that turns unpainted background into cells (or the reverse) scores worse
    than the start model."""
    pools = []
    for i, (ex, far) in enumerate(zip(examples, far_from_strokes)):
        if ex.teacher is not None:
            sure = (ex.teacher[cls] > 0.9) & far
            pools.append((i, sure, np.flatnonzero(sure)))
    total = sum(f.size for _, _, f in pools)
    if not total:
        return []
    starts = np.cumsum([0] + [f.size for _, _, f in pools])
    out = []
    for j in np.sort(rng.choice(total, size=min(n, total), replace=False)):
        q = int(np.searchsorted(starts, j, side="right") - 1)
        i, sure, flat = pools[q]
        H, W = sure.shape
        y, x = divmod(int(flat[j - starts[q]]), W)
        y0 = int(min(max(y - size // 2, 0), max(H - size, 0)))
        x0 = int(min(max(x - size // 2, 0), max(W - size, 0)))
        win = sure[y0 : y0 + size, x0 : x0 + size]
        out.append(_Region(i, y0, x0, np.where(win, cls, -1).astype(np.int64)))
    return out


def _window_probabilities(net, model: SegmentationModel, image: np.ndarray, y0: int, x0: int, h: int, w: int,
                          device, bf16: bool) -> np.ndarray:
    """Class probabilities (K, h, w) of the (normalised, (C, H, W)) ``image`` window at
    (y0, x0), with the context the network needs read mirrored around it."""
    from .model import context_margin
    from .predict import SAME_HALO, _min_tile_for

    config = model.config
    same = config.padding == "same"
    margin = SAME_HALO if same else context_margin(config)
    # windows start on the pooling grid, as the tiles of inference do (same output there)
    a = alignment(config)
    dy, dx = y0 % a, x0 % a
    y0, x0, h0, w0, h, w = y0 - dy, x0 - dx, h, w, h + dy, w + dx
    th, tw = _min_tile_for(config, h, margin), _min_tile_for(config, w, margin)
    H, W = image.shape[-2:]
    ys = reflect_index(np.arange(y0 - margin, y0 - margin + th), H)
    xs = reflect_index(np.arange(x0 - margin, x0 - margin + tw), W)
    x = torch.from_numpy(np.ascontiguousarray(image[:, ys][:, :, xs][None])).to(device)
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        y = torch.softmax(net(x).float(), dim=1)[0]
    y = y[:, margin : margin + h, margin : margin + w] if same else y[:, :h, :w]
    return y[:, dy : dy + h0, dx : dx + w0].cpu().numpy()


def _predicted_classes(probs: np.ndarray, model: SegmentationModel) -> np.ndarray:
    """Class per pixel as the model's post-processing sees it: the foreground class where its
    probability is above the model's threshold, else the most probable other class."""
    fg = model.foreground_class
    thr = model.postprocessing.get("threshold", 0.5)
    if probs.shape[0] == 3:  # background / interior / boundary: cell where interior + boundary > thr
        return np.where(probs[1] + probs[2] > thr, 1 + probs[1:].argmax(axis=0), 0)
    others = probs.copy()
    others[fg] = -1.0
    return np.where(probs[fg] > thr, fg, others.argmax(axis=0))


def _region_score(net, model: SegmentationModel, examples: list[_Example], regions: list[_Region], device,
                  bf16: bool) -> float:
    """Mean over the classes present in the truth of the per-class IoU on the scored pixels."""
    k = model.config.n_classes
    conf = np.zeros((k, k), np.int64)
    for r in regions:
        h, w = r.truth.shape
        probs = _window_probabilities(net, model, examples[r.example].image, r.y0, r.x0, h, w, device, bf16)
        pred = _predicted_classes(probs, model)
        m = r.truth >= 0
        conf += np.bincount(r.truth[m] * k + pred[m], minlength=k * k).reshape(k, k)
    ious = []
    for c in range(k):
        n_truth, n_pred, tp = conf[c].sum(), conf[:, c].sum(), conf[c, c]
        if n_truth:
            ious.append(tp / (n_truth + n_pred - tp))
    return float(np.mean(ious)) if ious else 0.0


@dataclass
class _CellWindow:
    example: int
    y0: int
    x0: int
    cells: np.ndarray  # painted cell ids (h, w) to score as objects, 0 elsewhere


def _cell_windows(ex_index: int, labels: np.ndarray, pad: int = 24) -> list[_CellWindow]:
    """Windows around the painted cells of ``labels`` (groups of cells closer than ``2 * pad``
    share one), with ``pad`` pixels of margin so that a predicted object that merges a cell
    with an unpainted neighbour shows as larger than the cell."""
    lab = np.asarray(labels)
    cells = np.where(lab >= 2, lab, 0)
    if not cells.any():
        return []
    H, W = cells.shape
    near = ndi.distance_transform_edt(cells == 0) <= pad
    comp, _ = ndi.label(near, structure=np.ones((3, 3), bool))
    out = []
    for sl in ndi.find_objects(comp):
        if sl is not None:
            win = cells[sl]
            if win.any():
                out.append(_CellWindow(ex_index, sl[0].start, sl[1].start, win.copy()))
    return out


def matched_cell_scores(predicted: np.ndarray, cells: np.ndarray, match_iou: float = 0.5) -> list[float]:
    """Per painted cell (ids >= 1 in ``cells``): the IoU of the predicted instance (ids >= 1 in
    ``predicted``) that matches it above ``match_iou``, or 0 when none does (the cell was
    lost, merged with a neighbour into one object, or split). One value per cell, in id order."""
    predicted, cells = np.asarray(predicted), np.asarray(cells)
    sizes = np.bincount(predicted.ravel())
    out = []
    for v in np.unique(cells[cells > 0]):
        m = cells == v
        ids, overlap = np.unique(predicted[m], return_counts=True)
        keep = ids > 0
        ious = overlap[keep] / (m.sum() + sizes[ids[keep]] - overlap[keep]) if keep.any() else np.zeros(0)
        best = float(ious.max()) if ious.size else 0.0
        out.append(best if best > match_iou else 0.0)
    return out


def _cell_score(net, model: SegmentationModel, examples: list[_Example], windows: list[_CellWindow], device,
                bf16: bool, match_iou: float) -> float:
    """Mean over the cells in ``windows`` of :func:`matched_cell_scores` with the model's own
    post-processing (threshold, seeds, smoothing, minimum size) on the predicted window."""
    from .predict import labels_from_model_output

    scores = []
    for w in windows:
        h, wd = w.cells.shape
        probs = _window_probabilities(net, model, examples[w.example].image, w.y0, w.x0, h, wd, device, bf16)
        scores += matched_cell_scores(labels_from_model_output(probs, model), w.cells, match_iou)
    return float(np.mean(scores)) if scores else 0.0


# --------------------------------------------------------------------------- the loss


def _collate(batch):
    """Stack tiles into tensors ``(x, classes, weights, distill weights or None, teacher or None)``."""
    return tuple(None if b[0] is None else torch.from_numpy(np.stack(b)) for b in zip(*batch))


class _Tiles(torch.utils.data.IterableDataset):
    """Endless training tiles for a DataLoader with worker processes (one seed each)."""

    def __init__(self, sampler, t_in, t_out, cfg):
        self.args = (sampler, t_in, t_out, cfg)

    def __iter__(self):
        sampler, t_in, t_out, cfg = self.args
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([cfg.seed, info.id if info else 0])
        while True:
            i, cy, cx = sampler(rng)
            yield _sample(sampler.examples[i], cy, cx, t_in, t_out, rng, cfg)


def _batches(sampler, t_in, t_out, rng, cfg):
    """Batches of tensors (see :func:`_collate`), forever; prepared by ``cfg.workers``
    processes, or here (reproducible for a seed) when it is 0."""
    if cfg.workers > 0:
        yield from torch.utils.data.DataLoader(_Tiles(sampler, t_in, t_out, cfg), batch_size=cfg.batch_size,
                                               num_workers=cfg.workers, persistent_workers=True, prefetch_factor=4,
                                               collate_fn=_collate)
        return
    while True:
        batch = []
        for _ in range(cfg.batch_size):
            i, cy, cx = sampler(rng)
            batch.append(_sample(sampler.examples[i], cy, cx, t_in, t_out, rng, cfg))
        yield _collate(batch)


def weighted_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``weights`` (0 = ignored), averaged over the
    total weight so that the loss scale does not depend on how much was annotated."""
    ce = F.cross_entropy(logits.float(), classes, reduction="none")
    total = weights.sum()
    return (ce * weights).sum() / total.clamp_min(1e-6)


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """KL divergence from the start model's probabilities ``target`` (N, K, H, W) to the
    network's, per pixel, times ``weights`` (N, H, W), averaged over all output pixels
    (0 when the network agrees with the start model)."""
    logp = F.log_softmax(logits.float(), dim=1)
    t = target.float()
    kl = (t * (torch.log(t.clamp_min(1e-8)) - logp)).sum(dim=1)
    return (kl * weights).mean()


def validation_scores(model: SegmentationModel, pairs, device="auto", precision="auto") -> dict:
    """Scores of ``model`` on ``(image, labels)`` pairs (labels in the convention): foreground
    IoU over annotated pixels, and average precision at IoU 0.5 when labels are complete."""
    from .metrics import average_precision
    from .predict import foreground_probability, labels_from_model_output, predict_probabilities

    ious, aps = [], []
    for image, labels in pairs:
        lab = validate_labels(labels)
        probs = predict_probabilities(image, model, device=device, precision=precision)
        fg = foreground_probability(probs, model) > model.postprocessing.get("threshold", 0.5)
        ann = lab > 0
        truth = lab >= 2
        inter = np.count_nonzero(fg & truth & ann)
        union = np.count_nonzero((fg | truth) & ann)
        ious.append(inter / union if union else 1.0)
        if ann.all():
            pred = labels_from_model_output(probs, model)
            aps.append(average_precision(pred, np.where(lab >= 2, lab - 1, 0)))
    out = {"iou": float(np.mean(ious))}
    if aps:
        out["ap50"] = float(np.mean(aps))
    out["score"] = out.get("ap50", out["iou"])
    return out


# --------------------------------------------------------------------------- the loop


#: held-out pixels at which the held-out strokes weigh half as much as the agreement with the start model
HELD_OUT_PIXELS = 1000

#: provenance keys that say a model's weights were trained (by napari-unet or elsewhere)
TRAINED_KEYS = ("trained_from", "training", "training_data", "source")


def _has_been_trained(model: SegmentationModel) -> bool:
    return any(k in model.provenance for k in TRAINED_KEYS)


def _count_objects(labels_list) -> dict:
    bg, cells, _ = _objects(labels_list)
    return {"cells": len(cells), "background_strokes": len(bg)}


def train(
    model: SegmentationModel,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: TrainingConfig | None = None,
    *,
    validation: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    callback: Callable[[Progress], None] | None = None,
    cancel=None,
    checkpoint: str | Path | None = None,
    channel_axis=None,
    image_names: Sequence[str] | None = None,
    overwrite: bool = False,
    name: str | None = None,
    description: str | None = None,
) -> TrainingResult:
    """Train (or fine-tune) ``model`` on ``images`` and their ``labels`` (project convention).

    The model is not modified: a trained copy is returned in the :class:`TrainingResult`, the
    best one seen (by validation score; when fine-tuning without validation data by the score
    on held-out strokes, the start model included; else by smoothed training loss). With
    ``checkpoint`` the best model is also written there (atomically) every time it improves.
    ``cancel`` (threading.Event or callable) stops within one iteration, keeping the best model
    so far. ``image_names`` (file or layer names) go on the fine-tuned model's card.
    Remarks on the painting (:func:`check_annotations`) are issued as warnings and returned
    in ``TrainingResult.warnings``. An existing ``checkpoint`` file is replaced only with
    ``overwrite``; every file written carries its own card (iterations done of planned,
    ``finished``). On ``KeyboardInterrupt`` the best model so far is written to ``checkpoint``
    and the interrupt re-raised with the :class:`TrainingResult` as its ``result``. ``name``
    and ``description`` are the trained model's (default: the start model's; a fine-tuned
    model describes itself).
    """
    cfg = config or TrainingConfig()
    if checkpoint is not None:
        from .io import check_output

        checkpoint = check_output(checkpoint, overwrite=overwrite)
    for what, seq in (("images", images), ("labels", labels)):
        if seq is None or isinstance(seq, (str, bytes, Path)) or hasattr(seq, "__fspath__"):
            raise ValueError(f"{what} must be a list of arrays, not {seq!r}: read files first (napari_unet.io.read_image)")
        if isinstance(seq, np.ndarray) and seq.ndim == 2:
            raise ValueError(f"{what} must be a list of images: wrap a single image in a list ([image])")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label images")
    if not len(images):
        raise ValueError("no training images given")
    if model.config.n_classes not in (2, 3):
        raise ValueError("training from the label convention needs a two-class (background, cell) or "
                         "three-class (background, interior, boundary) model")
    t0 = time.perf_counter()
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)

    checked = [validate_labels(lb) if np.asarray(lb).any() else np.asarray(lb) for lb in labels]
    if not any(lb.any() for lb in checked):
        raise ValueError("nothing is annotated: paint background (1) and cells (2, 3, ...) in the labels first")
    from .predict import check_finite_weights, check_image

    check_finite_weights(model)
    images = [check_image(im) for im in images]
    fine_tune = _has_been_trained(model) if cfg.fine_tune is None else bool(cfg.fine_tune)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    start = model
    model = copy.deepcopy(model)
    net = model.network.to(device)
    precision = resolve_precision(cfg.precision, device)
    bf16 = precision == "bfloat16"

    # hold out part of the painted objects to judge the iterations against the start model
    train_labels, held_labels = list(checked), None
    if fine_tune and not validation and cfg.holdout > 0:
        train_labels, held_labels = holdout_split(checked, cfg.holdout, seed=cfg.seed)
        if not any(h.any() for h in held_labels):
            held_labels = None
    examples = [_Example(np.asarray(im), np.asarray(lb), model, cfg, channel_axis) for im, lb in zip(images, train_labels)]
    if not any(np.any(lb >= 2) for lb in checked):
        raise ValueError(
            f"the annotations hold no cell, only {sum(int(np.count_nonzero(lb == 1)) for lb in checked)} background "
            "pixels: a model trained on them finds nothing (an all-zero instance or binary mask means 'no object "
            "here'); paint or include at least a few cells (label 2, 3, ...)"
        )
    for msg in check_annotations(checked):  # once the input is known to be usable
        note(msg)
    if fine_tune:
        # the frozen start model's probabilities: distillation targets and stand-in scoring pixels
        from .predict import predict_probabilities

        for ex in examples:
            ex.teacher = predict_probabilities(ex.raw, model, channel_axis=0, device=device, precision=precision)
        distill = cfg.distillation
    else:
        distill = 0.0
    painted = [np.asarray(lb) > 0 for lb in checked]
    if distill > 0:
        for ex, p in zip(examples, train_labels):
            ex.distill = distillation_weight(np.asarray(p) > 0, ex.teacher, cfg.distill_distance, cfg.distill_confidence)
    if not any(e.annotated.size for e in examples):
        raise ValueError("nothing is left to train on after holding out strokes: paint a few more")
    sampler = _Sampler(examples, cfg, cfg.free_tiles if distill > 0 else 0.0)

    # how iterations are judged
    regions: list[_Region] = []
    cell_windows: list[_CellWindow] = []
    anchors: list[_Region] = []
    n_scored = 0
    if fine_tune and not validation:
        if held_labels is not None:
            scored_on = "held-out strokes"
            src = held_labels
        else:
            scored_on = "painted pixels"
            src = checked
            note("Too few painted objects to hold some out for checking: the best iteration is judged on the "
                 "painted pixels themselves. Paint at least 4 cells and 4 background strokes for a fair check.")
        for i, lb in enumerate(src):
            lab = np.asarray(lb)
            if cfg.holdout_score == "objects":
                # cells as objects (a merge or a loss shows), background by pixel agreement
                cell_windows += _cell_windows(i, lab)
                if (lab == 1).any():
                    regions += _regions_of(i, np.where(lab == 1, 0, -1))
            elif lab.any():
                n_cls = model.config.n_classes
                two = cfg.separate_touching and n_cls == 2
                regions += _regions_of(i, to_classes(separate_touching(lab) if two else lab, n_cls, cfg.boundary_width))
        n_scored = sum(int(np.count_nonzero(np.asarray(lb) > 0)) for lb in src)
        # where nobody painted and the start model was sure, it is the reference: a fine-tuned
        # model must gain more on the held-out strokes than it loses there
        far = [ndi.distance_transform_edt(~p) > max(2 * cfg.distill_distance, 32) if p.any() else np.ones(p.shape, bool)
               for p in painted]
        arng = np.random.default_rng(cfg.seed + 1)
        for c in range(model.config.n_classes):
            anchors += _stand_ins(examples, far, c, arng)
    elif validation:
        scored_on = "validation"
    else:
        scored_on = "training loss"

    def evaluate() -> float:
        net.eval()
        if validation:
            s = validation_scores(model, validation, device=device, precision=precision)["score"]
        else:
            # a small held-out set is a noisy judge: it counts n / (n + HELD_OUT_PIXELS) as much as
            # the agreement with the start model
            parts, weights = [], []
            held = []
            if cell_windows:
                held.append(_cell_score(net, model, examples, cell_windows, device, bf16, cfg.match_iou))
            if regions:
                held.append(_region_score(net, model, examples, regions, device, bf16))
            if held:
                parts.append(float(np.mean(held)))
                weights.append(n_scored / (n_scored + HELD_OUT_PIXELS) if anchors else 1.0)
            if anchors:
                parts.append(_region_score(net, model, examples, anchors, device, bf16))
                weights.append(1.0)
            s = float(np.average(parts, weights=weights)) if parts else 0.0
        net.to(device).train()
        return s

    t_in, t_out = _input_tile(model, cfg.tile)
    _check_training_memory(model, t_in, cfg.batch_size, precision, device)
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    start_state = copy.deepcopy(net.state_dict())
    best_state, best_score, best_iter, ema = None, None, 0, None
    start_score = None
    if fine_tune and scored_on != "training loss":
        start_score = evaluate()
        best_state, best_score = start_state, start_score
    net.train()
    if cfg.train_layers == "decoder":
        for p in net.down.parameters():
            p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_at(it):
        if cfg.lr_schedule == "constant":
            return cfg.learning_rate
        warm = min(20, cfg.iterations // 10)
        if it < warm:
            return cfg.learning_rate * (it + 1) / warm
        frac = (it - warm) / max(1, cfg.iterations - warm)
        return cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    history: list[Progress] = []
    cancelled = False
    start_name = model.name
    start_provenance = copy.deepcopy(start.provenance)
    saved = []  # paths this call has written

    def interim_card() -> dict:
        # a checkpoint's own card: where it starts from and how far it got, never the start
        # model's (that one is kept under "start_provenance")
        return {"trained_from": start_name, "iterations": len(history), "iterations_planned": cfg.iterations,
                "best_iteration": best_iter, "finished": False, "training_images": len(examples),
                "training": asdict(cfg), "start_provenance": start_provenance,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def save_best():
        if checkpoint is not None and best_iter > 0:
            snap = copy.deepcopy(model)
            snap.network.load_state_dict(best_state)
            snap.name = name or f"{start_name} (training)"
            snap.description = f"unfinished training from {start_name}: best of {len(history)} iterations"
            snap.provenance = interim_card()
            save_model(snap, checkpoint, overwrite=True)  # checked at entry; ours from now on
            saved.append(checkpoint)

    def consider(score, it):
        nonlocal best_score, best_iter, best_state
        # a fine-tuned iteration must beat the start model; later ones may tie earlier ones
        if best_score is None or (score > best_score if best_iter == 0 else score >= best_score):
            best_score, best_iter = score, it
            best_state = copy.deepcopy(net.state_dict())
            save_best()

    batches = _batches(sampler, t_in, t_out, rng, cfg)
    interrupted = None
    try:
        for it in range(cfg.iterations):
            if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                cancelled = True
                break
            lr = lr_at(it)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, w, dw, tp = (None if t is None else t.to(device, non_blocking=True) for t in next(batches))
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
                ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                logits = net(x)
            loss = weighted_cross_entropy(logits, y, w)
            if distill > 0:
                loss = loss + distill * distillation_loss(logits, tp, dw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(
                    f"the loss became {lv} at iteration {it + 1}: lower the learning rate (now {cfg.learning_rate})"
                )
            ema = lv if ema is None else 0.95 * ema + 0.05 * lv
            prog = Progress(it + 1, cfg.iterations, lv, lr, seconds=time.perf_counter() - t0)
            last = it + 1 == cfg.iterations
            if (it + 1) % cfg.validate_every == 0 or last:
                if scored_on == "training loss":
                    score = -ema
                else:
                    score = evaluate()
                    prog.validation_score = score
                consider(score, it + 1)
            prog.best_score = best_score
            history.append(prog)
            if callback is not None:
                callback(prog)
    except KeyboardInterrupt as e:
        # Ctrl-C (or SIGTERM from the command line): keep what was learnt, on disk too
        interrupted, cancelled = e, True
    finally:
        batches.close()  # stops tile workers, if any
    if best_state is None:
        # cancelled before any checkpoint: the latest weights are the best we have
        best_state = copy.deepcopy(net.state_dict())
        best_iter = len(history)
    for p in net.parameters():
        p.requires_grad_(True)
    seconds = time.perf_counter() - t0
    kept_start = fine_tune and best_iter == 0
    if kept_start:
        tried = [p.validation_score for p in history if p.validation_score is not None]
        if tried:
            note(f"Fine-tuning did not beat the start model on the {scored_on} (start {start_score:.3f}, best "
                 f"fine-tuned {max(tried):.3f}): keeping the start model {start_name!r} unchanged. Paint where it "
                 "is wrong, both cells and background, and try again.")
        elif history:
            note(f"Stopped before the first check against the start model: keeping {start_name!r} unchanged.")
        kept = copy.deepcopy(start)
        if checkpoint is not None:
            save_model(kept, checkpoint, overwrite=True)
            saved.append(checkpoint)
        return _finish(TrainingResult(kept, history, 0, best_score, cancelled, seconds, start_score, True, notes,
                                      scored_on, checkpoint if saved else None), interrupted)
    net.load_state_dict(best_state)
    net.eval()
    net.to("cpu").to(memory_format=torch.contiguous_format)
    n_painted = int(sum(np.count_nonzero(p) for p in painted))
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card = {
        "trained_from": start_name,
        "iterations": len(history),
        "best_iteration": best_iter,
        "training_images": len(examples),
        "annotated_pixels": n_painted,
        "training": asdict(cfg),
        "date": date,
    }
    if fine_tune:
        names = list(image_names) if image_names is not None else [f"image {i + 1}" for i in range(len(images))]
        objects = _count_objects(checked)
        held = _count_objects(held_labels) if held_labels is not None else {"cells": 0, "background_strokes": 0}
        card.update({
            "fine_tuned": True,
            "start_model": {k: v for k, v in {
                "name": start_name, "description": start.description,
                "training_data": start.provenance.get("training_data"), "date": start.provenance.get("date"),
            }.items() if v},
            "images": names,
            "painted_pixels": n_painted,
            "painted_objects": objects,
            "held_out_objects": held,
            "scored_on": scored_on,
            "start_score": start_score,
            "best_score": best_score,
            "distillation": distill,
        })
        where = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        model.description = (
            f"{start_name} fine-tuned on {date[:10]} with napari-unet from {objects['cells']} painted cells and "
            f"{objects['background_strokes']} background strokes ({n_painted} pixels) on {where}"
            + (f"; {scored_on} score {start_score:.3f} -> {best_score:.3f}" if start_score is not None else "")
            + f". Start model: {start.description or start_name}"
        )
        model.provenance = card
    else:
        model.provenance.update(card)
    model.provenance.update({"iterations_planned": cfg.iterations,
                             "finished": not cancelled and len(history) == cfg.iterations})
    if start_provenance and not fine_tune:
        model.provenance.setdefault("start_provenance", start_provenance)
    if name:
        model.name = name
    if description is not None:
        model.description = description
    if checkpoint is not None and history:
        save_model(model, checkpoint, overwrite=True)
        saved.append(checkpoint)
    return _finish(TrainingResult(model, history, best_iter, best_score, cancelled, seconds, start_score, False, notes,
                                  scored_on, checkpoint if saved else None), interrupted)


def _finish(result: TrainingResult, interrupted: BaseException | None) -> TrainingResult:
    """Return ``result``, or re-raise the interrupt that ended the run with ``result`` on it."""
    if interrupted is not None:
        interrupted.result = result
        raise interrupted
    return result
