"""One training image made ready: normalised, its painted classes, loss weights and sampling strata."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..labels import separate_touching, to_classes, validate_labels
from ..model import output_size, valid_input_size
from ..modelfile import SegmentationModel
from ..weightmap import border_weight, class_map_weights
from .config import TrainingConfig

__all__ = ["Example", "check_training_memory", "checked_input", "input_tile"]


class Example:
    """One normalised image with its labels, classes, weights and sampling strata."""

    def __init__(self, image: np.ndarray, labels: np.ndarray, model: SegmentationModel, cfg: TrainingConfig,
                 channel_axis=None):
        from ..inputs import as_planes

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
        self.boundary_width = cfg.boundary_width_for(model)
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
        self.classes = (to_classes(lab, self.n_classes, self.boundary_width, cfg.unknown_rims) if lab.any()
                        else np.full(lab.shape, -1, np.int64))
        border = border_weight(lab, w0=cfg.w0, sigma=cfg.sigma) if cfg.w0 > 0 and lab.any() else None
        # the class balance of the targets themselves (no second to_classes)
        self.weights = class_map_weights(self.classes, self.n_classes, cfg.class_balance_power if cfg.class_balance
                                         else 0.0)
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


def check_training_memory(model, t_in: int, batch_size: int, precision: str, device, *,
                          weight_copies: int = 4) -> None:
    """Refuse a tile x batch whose activations (kept for the backward pass) cannot fit, before
    the first iteration allocates them; with them ``weight_copies`` float32 copies of the
    weights (the weights, their gradients, Adam's two moments; one more for a moving average)."""
    from ..tileplan import peak_bytes_per_pixel

    n_weights = sum(p.numel() for p in model.network.parameters())
    need = t_in * t_in * batch_size * peak_bytes_per_pixel(model.config, precision, training=True) \
        + 4.0 * weight_copies * n_weights
    what = f"training on tiles of {t_in}x{t_in} pixels in batches of {batch_size}"
    way_out = "use a smaller --tile or --batch-size"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise ValueError(f"{what} needs about {need / 2**30:.1f} GiB of GPU memory, {free / 2**30:.1f} GiB are "
                             f"free: {way_out}")
    elif device.type == "cpu":
        from ..memory import check_memory

        check_memory(need, what, way_out)


def input_tile(model: SegmentationModel, tile: int) -> tuple[int, int]:
    """(input, output) edge of a valid training tile near ``tile`` for ``model``."""
    cfg = model.config
    t = valid_input_size(cfg, tile)
    out = output_size(cfg, t) if cfg.padding == "valid" else t
    return t, out


def checked_input(model: SegmentationModel, images, labels):
    """``(images, labels)`` checked (finite image arrays, labels in the convention), or a one-line error."""
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
    checked = [validate_labels(lb) if np.asarray(lb).any() else np.asarray(lb) for lb in labels]
    if not any(lb.any() for lb in checked):
        raise ValueError("nothing is annotated: paint background (1) and cells (2, 3, ...) in the labels first")
    from ..inputs import check_finite_weights, check_image

    check_finite_weights(model)
    return [check_image(im) for im in images], checked
