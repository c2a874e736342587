"""The paper's loss: pixel-wise softmax cross-entropy weighted by the weight map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["weighted_cross_entropy"]


def weighted_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``weights`` (0 = ignored), averaged over the
    total weight so that the loss scale does not depend on how much was annotated."""
    ce = F.cross_entropy(logits.float(), classes, reduction="none")
    total = weights.sum()
    return (ce * weights).sum() / total.clamp_min(1e-6)
