"""Segmentation scores: pixel error, Rand error (ISBI 2012), IoU, instance average precision.

Inputs are 2D arrays of equal shape. Foreground masks: bool or labels, non-zero =
foreground. Instance images: 0 = background (or boundary), k > 0 = object k (ids need
not be contiguous). To score convention labels (0 = not annotated, 1 = background,
>= 2 = cells) convert them first with :func:`napari_unet.labels.to_instances`.

Rand error protocol (ISBI 2012 challenge, "foreground-restricted Rand scoring after
border thinning", Arganda-Carreras et al. 2015): pixels that are boundary/background
(0) in the *truth* are ignored; pixels that are boundary (0) in the *prediction* are
given to the nearest predicted segment (Euclidean distance, i.e. the predicted membranes
are thinned away) before scoring. The score is ``1 - adapted Rand F-score`` (0 = perfect),
the same value as :func:`skimage.metrics.adapted_rand_error` with ``ignore_labels=(0,)``.

Average precision (as in the Data Science Bowl 2018 / StarDist): objects are matched
one-to-one when their IoU is > ``threshold``; ``AP = TP / (TP + FP + FN)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

__all__ = [
    "pixel_error",
    "rand_error",
    "rand_scores",
    "iou",
    "MatchResult",
    "match_instances",
    "average_precision",
    "evaluate",
]


def _pair(a, b, what: str):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{what}: prediction shape {a.shape} differs from truth shape {b.shape}")
    return a, b


def pixel_error(pred_fg, true_fg) -> float:
    """Fraction of pixels whose foreground/background class differs (non-zero = foreground)."""
    p, t = _pair(pred_fg, true_fg, "pixel_error")
    if p.size == 0:
        return 0.0
    return float(np.count_nonzero((p != 0) != (t != 0)) / p.size)


def iou(pred_fg, true_fg) -> float:
    """Intersection over union of the foregrounds (non-zero); 1.0 when both are empty."""
    p, t = _pair(pred_fg, true_fg, "iou")
    p = p != 0
    t = t != 0
    union = np.count_nonzero(p | t)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t) / union)


def _fill_boundaries(pred: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the id of the nearest non-zero pixel (all 0 -> one segment)."""
    zero = pred == 0
    if not zero.any():
        return pred
    if zero.all():
        return np.ones_like(pred)
    iy, ix = ndi.distance_transform_edt(zero, return_distances=False, return_indices=True)
    return pred[iy, ix]


def rand_scores(pred_labels, true_labels, fill_pred_boundaries: bool = True):
    """ISBI 2012 Rand scores ``(error, precision, recall)`` (see module docstring).

    Over the scored pixels (truth != 0), counting pairs of pixels:
    ``precision`` = pairs together in both / pairs together in the prediction (merges
    lower it), ``recall`` = pairs together in both / pairs together in the truth (splits
    lower it), ``error = 1 - 2 P R / (P + R)``. The error equals
    :func:`skimage.metrics.adapted_rand_error`'s; precision and recall are computed here
    because scikit-image returns them swapped with respect to its documentation
    (scikit-image issue #6485). With ``fill_pred_boundaries`` predicted 0 pixels join the
    nearest predicted segment, otherwise predicted 0 is one segment. NaNs when fewer
    than two pixels are scored.
    """
    p, t = _pair(pred_labels, true_labels, "rand_error")
    if p.ndim != 2:
        raise ValueError(f"rand_error expects 2D instance images, got shape {p.shape}")
    if fill_pred_boundaries:
        p = _fill_boundaries(p)
    scored = t != 0
    n = int(np.count_nonzero(scored))
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    _, p_idx = np.unique(p[scored], return_inverse=True)
    _, t_idx = np.unique(t[scored], return_inverse=True)
    p_idx = p_idx.ravel().astype(np.int64)
    t_idx = t_idx.ravel().astype(np.int64)
    _, joint = np.unique(t_idx * (int(p_idx.max()) + 1) + p_idx, return_counts=True)
    p_sizes = np.bincount(p_idx).astype(np.float64)
    t_sizes = np.bincount(t_idx).astype(np.float64)
    joint = joint.astype(np.float64)
    both = joint @ joint - n  # ordered pairs of distinct pixels together in both
    in_pred = p_sizes @ p_sizes - n
    in_true = t_sizes @ t_sizes - n
    precision = both / in_pred if in_pred else 1.0
    recall = both / in_true if in_true else 1.0
    denom = in_pred + in_true
    error = 1.0 - 2.0 * both / denom if denom else 0.0
    return float(error), float(precision), float(recall)


def rand_error(pred_labels, true_labels, fill_pred_boundaries: bool = True) -> float:
    """ISBI 2012 Rand error ``1 - adapted Rand F-score`` (0 = perfect), see :func:`rand_scores`."""
    return rand_scores(pred_labels, true_labels, fill_pred_boundaries)[0]


@dataclass(frozen=True)
class MatchResult:
    """One-to-one object matching at an IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    precision: float  # TP / n_pred
    recall: float  # TP / n_true
    f1: float
    average_precision: float  # TP / (TP + FP + FN)
    mean_matched_iou: float  # mean IoU of the matched pairs (nan if none)

    def to_dict(self) -> dict:
        return asdict(self)


def _overlaps(pred: np.ndarray, true: np.ndarray):
    """Sparse overlap table: (true index, pred index, intersection, IoU) per overlapping
    pair, plus the object counts. Indices are 0-based over the objects present."""
    p, t = _pair(pred, true, "match_instances")
    if (p.size and p.min() < 0) or (t.size and t.min() < 0):
        raise ValueError("instance ids must be >= 0 (0 = background)")
    p = p.ravel()
    t = t.ravel()
    p_ids, p_inv = np.unique(p, return_inverse=True)
    t_ids, t_inv = np.unique(t, return_inverse=True)
    # make index 0 mean background in both
    p_off = 0 if (p_ids.size and p_ids[0] == 0) else 1
    t_off = 0 if (t_ids.size and t_ids[0] == 0) else 1
    p_inv = p_inv.ravel() + p_off
    t_inv = t_inv.ravel() + t_off
    n_p = p_ids.size - (1 - p_off)
    n_t = t_ids.size - (1 - t_off)
    p_area = np.bincount(p_inv, minlength=n_p + 1)
    t_area = np.bincount(t_inv, minlength=n_t + 1)
    both = (p_inv > 0) & (t_inv > 0)
    code = t_inv[both].astype(np.int64) * (n_p + 1) + p_inv[both]
    codes, inter = np.unique(code, return_counts=True)
    ti = codes // (n_p + 1)
    pi = codes % (n_p + 1)
    union = t_area[ti] + p_area[pi] - inter
    ious = inter / union
    return ti - 1, pi - 1, ious, n_p, n_t


def _match(ti, pi, ious, n_p, n_t, threshold: float) -> MatchResult:
    cand = ious > threshold
    ti, pi, ious = ti[cand], pi[cand], ious[cand]
    if threshold >= 0.5 or ti.size == 0:
        # IoU > 0.5 pairs are unique on both sides: every candidate is a match
        matched = ious
    else:
        ut, t_idx = np.unique(ti, return_inverse=True)
        up, p_idx = np.unique(pi, return_inverse=True)
        m = np.zeros((ut.size, up.size))
        m[t_idx, p_idx] = ious
        rows, cols = linear_sum_assignment(m, maximize=True)
        matched = m[rows, cols]
        matched = matched[matched > threshold]
    tp = int(matched.size)
    fp = n_p - tp
    fn = n_t - tp
    precision = tp / n_p if n_p else (1.0 if n_t == 0 else 0.0)
    recall = tp / n_t if n_t else (1.0 if n_p == 0 else 0.0)
    denom = tp + fp + fn
    ap = tp / denom if denom else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if denom else 1.0
    mean_iou = float(matched.mean()) if tp else float("nan")
    return MatchResult(float(threshold), tp, fp, fn, int(n_p), int(n_t), precision, recall, f1, ap, mean_iou)


def match_instances(pred_labels, true_labels, threshold: float = 0.5) -> MatchResult:
    """Match predicted to true objects one-to-one with IoU > ``threshold``.

    Above 0.5 a match is unique (each object overlaps at most one partner by more than
    half the union); below, a maximum-IoU assignment (Hungarian) is used. 0 = background
    in both instance images. Two empty images give precision = recall = AP = 1.
    """
    ti, pi, ious, n_p, n_t = _overlaps(pred_labels, true_labels)
    return _match(ti, pi, ious, n_p, n_t, threshold)


def average_precision(pred_labels, true_labels, threshold: float = 0.5) -> float:
    """``TP / (TP + FP + FN)`` with objects matched at IoU > ``threshold``."""
    return match_instances(pred_labels, true_labels, threshold).average_precision


def evaluate(pred_labels, true_labels, thresholds=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)) -> dict:
    """All scores for a predicted instance image against a true one (0 = background/boundary).

    Keys: ``pixel_error``, ``iou``, ``rand_error``, ``rand_precision``, ``rand_recall``,
    ``ap50``/``precision``/``recall``/``f1``/``tp``/``fp``/``fn`` (at IoU > 0.5),
    ``ap75``, ``mean_ap`` (mean AP over ``thresholds``, the DSB 2018 score) and
    ``n_pred``, ``n_true``.
    """
    p, t = _pair(pred_labels, true_labels, "evaluate")
    ti, pi, ious, n_p, n_t = _overlaps(p, t)
    m50 = _match(ti, pi, ious, n_p, n_t, 0.5)
    m75 = _match(ti, pi, ious, n_p, n_t, 0.75)
    aps = [_match(ti, pi, ious, n_p, n_t, th).average_precision for th in thresholds]
    r_err, r_prec, r_rec = rand_scores(p, t)
    return {
        "pixel_error": pixel_error(p, t),
        "iou": iou(p, t),
        "rand_error": r_err,
        "rand_precision": r_prec,
        "rand_recall": r_rec,
        "ap50": m50.average_precision,
        "ap75": m75.average_precision,
        "mean_ap": float(np.mean(aps)) if len(aps) else float("nan"),
        "precision": m50.precision,
        "recall": m50.recall,
        "f1": m50.f1,
        "tp": m50.tp,
        "fp": m50.fp,
        "fn": m50.fn,
        "n_pred": m50.n_pred,
        "n_true": m50.n_true,
    }
