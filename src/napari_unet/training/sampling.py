"""Training tiles: class-stratified tile centres, one augmented tile per centre, and batches of them."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..augment import augment, microscope, rescale
from ..tiling import reflect_index
from .config import TrainingConfig
from .examples import Example

__all__ = ["Sampler", "sample_tile", "batches"]


def sample_tile(ex: Example, cy: int, cx: int, t_in: int, t_out: int, rng: np.random.Generator, cfg: TrainingConfig):
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


class Sampler:
    """Tile centres: class-stratified (each painted class and the cell gaps as often as each
    other, however few pixels they have), plus a share of free tiles anywhere when distilling."""

    def __init__(self, examples: list[Example], cfg: TrainingConfig, free: float):
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
            yield sample_tile(sampler.examples[i], cy, cx, t_in, t_out, rng, cfg)


def batches(sampler, t_in, t_out, rng, cfg):
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
            batch.append(sample_tile(sampler.examples[i], cy, cx, t_in, t_out, rng, cfg))
        yield _collate(batch)
