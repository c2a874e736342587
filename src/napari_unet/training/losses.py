"""The paper's loss: pixel-wise softmax cross-entropy weighted by the weight map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["weighted_cross_entropy"]


def weighted_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor,
                           interior_as_cell: bool = False) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``weights`` (0 = ignored), averaged over the
    total weight so that the loss scale does not depend on how much was annotated.

    ``interior_as_cell`` (three-class networks): pixels of class 1 (interior) are scored as
    "a cell pixel", ``-log(p_interior + p_boundary)``, so that they teach cell against
    background and leave the split between interior and boundary alone (fine-tuning from
    strokes, where the start model keeps drawing the boundary; docs/training.md)."""
    ce = F.cross_entropy(logits.float(), classes, reduction="none")
    if interior_as_cell and logits.shape[1] == 3:
        cell = -torch.logsumexp(F.log_softmax(logits.float(), dim=1)[:, 1:], dim=1)
        ce = torch.where(classes == 1, cell, ce)
    total = weights.sum()
    return (ce * weights).sum() / total.clamp_min(1e-6)
