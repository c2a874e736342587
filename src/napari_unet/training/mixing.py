"""Weight-space interpolation between the start model and a fine-tuned one (WiSE-FT).

Wortsman et al. (CVPR 2022) found that moving a pre-trained network only part of the way to
its fine-tuned weights keeps most of what fine-tuning gained on the new data and much of what
the start knew elsewhere. Fine-tuning from a few strokes is the extreme case of "little new
data", so :attr:`TrainingConfig.mix_with_start` lets the checks score (and keep) the mixed
weights instead of the fine-tuned ones (docs/training.md, "Mixing with the start model").
"""

from __future__ import annotations

import torch

__all__ = ["mix_weights", "average_weights"]


def mix_weights(start: dict, tuned: dict, share: float) -> dict:
    """``start + share * (tuned - start)`` for every floating-point tensor of two state dicts
    of the same network (``share`` 1: ``tuned``, 0: ``start``); other entries (counters) are
    ``tuned``'s. The result is on ``tuned``'s devices and in its dtypes."""
    if start.keys() != tuned.keys():
        raise ValueError("the two weight sets are not of the same network")
    out = {}
    for k, t in tuned.items():
        if torch.is_floating_point(t):
            s = start[k].to(device=t.device, dtype=t.dtype)
            out[k] = torch.lerp(s, t, float(share))
        else:
            out[k] = t
    return out


def average_weights(states: list[dict]) -> dict:
    """The mean of the floating-point tensors of several state dicts of one network (a "model
    soup", Wortsman et al., ICML 2022), in float32; other entries are the first one's."""
    if not states:
        raise ValueError("no weights to average")
    if any(s.keys() != states[0].keys() or any(s[k].shape != states[0][k].shape for k in s) for s in states):
        raise ValueError("the weight sets are not of the same network")
    return {k: sum(s[k].float() for s in states) / len(states) if torch.is_floating_point(t) else t
            for k, t in states[0].items()}
