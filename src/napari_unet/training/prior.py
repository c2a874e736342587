"""Class weights that leave the start model's class prior where it was (fine-tuning from strokes).

Which classes a user paints, and how much of each, says nothing about how much of the image is
cell. Yet the class-balanced loss, averaged per tile over tiles centred class by class, pulls the
network's overall leaning (how readily it calls a pixel cell) towards whatever the painting's mix
implies: fine-tuned from cells only, or from a fully labelled frame, `fluo-nuclei` grew every
nucleus (foreground pixels on another frame +24 to +26 %), from scribbles it shrank them (-26 %), and
the post-processing thresholds tuned for the start model then draw the wrong outlines
everywhere. Here each painted class's weight is scaled so that, for the start model, the pulls
of the painted pixels on the class scores cancel: the strokes can still change what the network
sees (features), but at iteration 0 they give no net push towards more or less of any class.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

__all__ = ["class_pull", "keep_prior", "prior_neutral_scales", "sampled_pull"]

#: bounds of a class's weight scale before the total weight is restored (so at most 100x
#: apart): a class the start model already gets right everywhere must not become all or
#: nothing of the loss
SCALE_RANGE = (0.1, 10.0)


def class_pull(probs: np.ndarray, classes: np.ndarray, weights: np.ndarray, n_classes: int,
               cell_set: bool = False) -> np.ndarray:
    """(n_classes, n_classes) matrix: column ``k`` is the weighted sum over the pixels of target
    class ``k`` of the start model's residual ``p - q`` (the gradient of the cross-entropy on
    the class scores; ``q`` the target distribution). ``cell_set`` (three classes, fine-tuning):
    class-1 pixels are scored as "cell", so their target is ``p`` restricted to classes 1 and 2."""
    p = probs.reshape(n_classes, -1).astype(np.float64)
    cls = classes.ravel()
    w = weights.ravel().astype(np.float64)
    out = np.zeros((n_classes, n_classes))
    for k in range(n_classes):
        m = (cls == k) & (w > 0)
        if not m.any():
            continue
        pk, wk = p[:, m], w[m]
        q = np.zeros_like(pk)
        if cell_set and k == 1 and n_classes == 3:
            q[1:] = pk[1:] / np.maximum(pk[1:].sum(axis=0), 1e-8)
        else:
            q[k] = 1.0
        out[:, k] = ((pk - q) * wk).sum(axis=1)
    return out


def prior_neutral_scales(pull: np.ndarray, totals: np.ndarray) -> np.ndarray | None:
    """Per-class weight scales ``a`` (``a_k`` > 0, clipped to :data:`SCALE_RANGE`) with
    ``pull @ a`` as near 0 as can be and the total weight ``totals @ a`` unchanged; None when
    fewer than two classes are painted (nothing to balance against: the scales stay 1)."""
    present = totals > 0
    if present.sum() < 2:
        return None
    P, T = pull[:, present], totals[present]
    # nnls on the pull rows plus a heavily weighted row that keeps the total weight
    scale = np.abs(P).sum() / max(T.sum(), 1e-12) + 1e-12
    big = 1e3 * scale
    A = np.vstack([P, big * T[None, :]])
    b = np.concatenate([np.zeros(P.shape[0]), [big * T.sum()]])
    a, _ = nnls(A, b)
    a = np.clip(a, *SCALE_RANGE)
    a *= T.sum() / float(T @ a)
    out = np.ones(pull.shape[1])
    out[present] = a
    return out


def sampled_pull(examples, sampler, t_out: int, rng: np.random.Generator, n_tiles: int = 256,
                 cell_set: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """``(pull, totals, mean tile weight)`` as the training loop sees them: :func:`class_pull`
    and the total weight of each class summed over ``n_tiles`` output windows drawn by
    ``sampler`` (un-augmented), each divided by the mean total weight of a tile, as the
    fine-tuning loss is (:func:`keep_prior`)."""
    k = examples[0].n_classes
    pull, totals = np.zeros((k, k)), np.zeros(k)
    h = t_out // 2
    sums = []
    for _ in range(n_tiles):
        i, cy, cx = sampler(rng)
        ex = examples[i]
        H, W = ex.shape
        sl = (slice(max(0, cy - h), min(H, cy - h + t_out)), slice(max(0, cx - h), min(W, cx - h + t_out)))
        cls, w = ex.classes[sl], np.where(ex.classes[sl] >= 0, ex.weights[sl], 0.0)
        sums.append(float(w.sum()))
        if sums[-1] <= 0:
            continue
        pull += class_pull(ex.teacher[(slice(None), *sl)], cls, w, k, cell_set)
        totals += np.bincount(cls[w > 0].ravel(), weights=w[w > 0].ravel(), minlength=k)[:k]
    mean = float(np.mean(sums)) if sums else 0.0
    if mean > 0:
        pull, totals = pull / mean, totals / mean
    return pull, totals, mean


def keep_prior(examples, sampler, t_out: int, seed: int, cell_set: bool = False,
               rounds: int = 2) -> tuple[np.ndarray | None, float]:
    """Scale each example's loss weights class by class (in place) so that the start model's
    class prior is a fixed point of the supervised loss (:func:`prior_neutral_scales`, solved
    ``rounds`` times: each round's tiles see the previous scales).
    Returns ``(scales or None when there was nothing to balance, the mean total weight of a
    tile)``: the loop divides each tile's supervised loss by that constant rather than by the
    tile's own total, so that a tile holding a few painted pixels pulls less than one holding
    many (divided by its own total, a tile centred on one small background dab pulled as hard
    as a fully painted one, and class scales cancelled within single-class tiles). The tiles
    are drawn with generators of their own, so the training tiles stay those of ``seed``."""
    if any(ex.teacher is None for ex in examples):
        return None, 0.0
    total = None
    for r in range(rounds):
        pull, totals, _ = sampled_pull(examples, sampler, t_out, np.random.default_rng([seed, 7919, r]),
                                       cell_set=cell_set)
        a = prior_neutral_scales(pull, totals)
        if a is None:
            break
        for ex in examples:
            ann = ex.classes >= 0
            ex.weights[ann] *= a[ex.classes[ann]].astype(np.float32)
        total = a if total is None else total * a
    _, _, mean = sampled_pull(examples, sampler, t_out, np.random.default_rng(3), cell_set=cell_set)
    return total, mean
