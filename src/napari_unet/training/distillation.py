"""Distillation from the frozen start model on unpainted pixels: where, how much, and the loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

__all__ = ["distillation_weight", "distillation_loss"]


def distillation_weight(painted: np.ndarray, probabilities: np.ndarray | None, distance: float = 8.0,
                        confidence: bool = True, unknown: np.ndarray | None = None) -> np.ndarray:
    """Weight (float32, (H, W)) of the distillation term at each pixel.

    0 on painted pixels; elsewhere ``1 - exp(-d**2 / (2 * distance**2))`` with ``d`` the
    distance in pixels to the nearest painted pixel (so the strokes decide near them and the
    start model far from them; ``distance=0``: 1 everywhere unpainted), times the start
    model's confidence ``(p_max - 1/K) / (1 - 1/K)`` when ``confidence`` (its ``K`` class
    ``probabilities``, shape (K, H, W)). ``unknown`` (bool (H, W)) marks painted pixels whose
    class the painting does not tell (a three-class cell's rim next to unpainted pixels,
    :func:`napari_unet.labels.to_classes`): there the start model is the target at its
    confidence, so that it keeps drawing the boundary where strokes cannot teach it.
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
        conf = np.clip(conf, 0.0, 1.0)
        w = w * conf
    else:
        conf = 1.0
    out = np.where(painted, 0.0, w)
    if unknown is not None:
        out = np.where(unknown, conf, out)
    return out.astype(np.float32)


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """KL divergence from the start model's probabilities ``target`` (N, K, H, W) to the
    network's, per pixel, times ``weights`` (N, H, W), averaged over all output pixels
    (0 when the network agrees with the start model)."""
    logp = F.log_softmax(logits.float(), dim=1)
    t = target.float()
    kl = (t * (torch.log(t.clamp_min(1e-8)) - logp)).sum(dim=1)
    return (kl * weights).mean()
