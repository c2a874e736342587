"""Training and fine-tuning from few, partial annotations (the paper's second half).

Labels follow the project convention (see :mod:`napari_unet.labels`): 0 = not annotated
(ignored), 1 = background, >= 2 = one cell each. The loss is the paper's pixel-wise softmax
cross-entropy weighted by its weight map (class balance + border term between touching
cells); unannotated pixels weigh 0. Tiles are drawn around annotated pixels, so a few strokes
on one large image train as well as a folder of fully labelled ones.

The loop is plain Python: ``callback`` receives a :class:`Progress` after every iteration
(the napari widget plots it; the command line shows a tqdm bar), ``cancel`` stops it within one
iteration, and the best model so far (by validation score, or by smoothed training loss when
there is no validation data) is what is returned and, with ``checkpoint``, what is on disk.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment, microscope, rescale
from .device import resolve_device
from .labels import separate_touching, to_classes, validate_labels
from .model import context_margin, output_size, valid_input_size
from .modelfile import SegmentationModel, save_model
from .predict import resolve_precision
from .tiling import Cancelled, read_mirrored
from .weightmap import weight_map

__all__ = ["TrainingConfig", "Progress", "TrainingResult", "train", "validation_scores"]


@dataclass
class TrainingConfig:
    """Settings of :func:`train`; every departure from the paper is an option.

    ``optimizer="sgd"`` with ``momentum=0.99``, ``batch_size=1`` and a large ``tile`` is the
    paper's recipe. The default is Adam with a cosine-decayed learning rate (see
    docs/training.md for the comparison). ``precision="auto"`` trains under bfloat16 autocast
    (float32 master weights) where the hardware runs bfloat16 natively, float32 elsewhere.
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
    model: SegmentationModel
    history: list[Progress] = field(default_factory=list)
    best_iteration: int = 0
    best_score: float | None = None
    cancelled: bool = False
    seconds: float = 0.0
    checkpoint: Path | None = None  # the file this run wrote (None if it wrote none)


class _Example:
    """One normalised image with its labels, weight map and annotated pixels."""

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
            import warnings

            warnings.warn(
                f"{n_bad} of {img.size} pixels of a training image are NaN or infinite: treated as missing data "
                "(filled with the image's dark level, and not trained on)",
                stacklevel=3,
            )
        lab = validate_labels(labels)
        if lab.shape != img.shape[-2:]:
            raise ValueError(f"labels of shape {lab.shape} do not match the image's {img.shape[-2:]}")
        self.image = model.normalization(img)
        n_classes = model.config.n_classes
        if cfg.separate_touching and n_classes == 2:
            # a two-class network can only keep touching cells apart if it is taught to draw the
            # background line between them (the paper's ground truth has such lines); a
            # three-class network has its boundary class for that
            lab = separate_touching(lab)
        if n_bad:
            lab = np.where(np.isfinite(img).all(axis=0), lab, 0)  # missing pixels are not annotated
        self.labels = lab
        # targets are made on the whole image, where it is known what lies next to a cell
        self.classes = (to_classes(lab, n_classes, cfg.boundary_width) + 1).astype(np.int8)  # 0 = ignored
        self.weights = weight_map(lab, w0=cfg.w0, sigma=cfg.sigma, class_balance=cfg.class_balance,
                                  n_classes=n_classes)
        self.annotated = np.flatnonzero(lab.ravel() > 0)
        self.shape = lab.shape


def _refuse_unlearnable(labels_list) -> None:
    """Refuse annotations without a single cell (a model trained on them finds nothing); warn
    when an image, or the whole set, holds one class only."""
    import warnings

    cells = [int(np.count_nonzero(lab >= 2)) for lab in labels_list]
    background = [int(np.count_nonzero(lab == 1)) for lab in labels_list]
    if not sum(cells):
        raise ValueError(
            f"the annotations hold no cell, only {sum(background)} background pixels: a model trained on them finds "
            "nothing (an all-zero instance or binary mask means 'no object here'); paint or include at least a "
            "few cells (label 2, 3, ...)"
        )
    if not sum(background):
        warnings.warn(
            "the annotations hold no background (label 1) at all, only cells: the model learns to call everything a "
            "cell; paint some background around the cells",
            stacklevel=3,
        )
    elif len(labels_list) > 1:
        for i, (c, b) in enumerate(zip(cells, background)):
            if not c or not b:
                warnings.warn(
                    f"training image {i + 1} has one class only ({'background' if b else 'cells'}): fine as an "
                    "example of that class, but check that its labels are the intended ones",
                    stacklevel=3,
                )


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


def _sample(ex: _Example, t_in: int, t_out: int, rng: np.random.Generator, cfg: TrainingConfig):
    """A training tile centred near a random annotated pixel: image (C, t_in, t_in), classes and
    weights (t_out, t_out)."""
    H, W = ex.shape
    idx = ex.annotated[rng.integers(ex.annotated.size)]
    cy, cx = divmod(int(idx), W)
    jitter = t_out // 4
    cy += int(rng.integers(-jitter, jitter + 1))
    cx += int(rng.integers(-jitter, jitter + 1))
    zoom = math.exp(rng.uniform(-math.log(cfg.max_zoom), math.log(cfg.max_zoom))) if cfg.max_zoom > 1 else 1.0
    size = max(8, int(round(t_in / zoom)))  # source window shown as t_in pixels
    y0, x0 = cy - size // 2, cx - size // 2
    img = read_mirrored(ex.image, y0, x0, size, size)
    cls = read_mirrored(ex.classes[None], y0, x0, size, size)[0].astype(np.int8)
    wts = read_mirrored(ex.weights[None], y0, x0, size, size)[0]
    if size != t_in:
        img, cls, wts = rescale(img, cls, wts, size=t_in)
    img, cls, wts = augment(
        img, cls, wts, rng=rng, elastic=cfg.elastic, grid=cfg.elastic_grid, sigma=cfg.elastic_sigma,
        max_rotation=cfg.max_rotation, max_shift=cfg.max_shift, max_scale=cfg.max_scale, intensity=cfg.intensity,
    )
    if cfg.microscope and rng.random() < cfg.microscope:
        img = microscope(img, rng, background=cls == 1)
    m = (t_in - t_out) // 2
    cls = cls[m : m + t_out, m : m + t_out].astype(np.int64) - 1
    wts = wts[m : m + t_out, m : m + t_out]
    wts = np.where(cls < 0, 0.0, wts).astype(np.float32)
    return img.astype(np.float32), np.maximum(cls, 0), wts


class _Tiles(torch.utils.data.IterableDataset):
    """Endless training tiles for a DataLoader with worker processes (one seed each)."""

    def __init__(self, examples, pick_p, t_in, t_out, cfg):
        self.args = (examples, pick_p, t_in, t_out, cfg)

    def __iter__(self):
        examples, pick_p, t_in, t_out, cfg = self.args
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([cfg.seed, info.id if info else 0])
        while True:
            ex = examples[rng.choice(len(examples), p=pick_p)]
            yield _sample(ex, t_in, t_out, rng, cfg)


def _batches(examples, pick_p, t_in, t_out, rng, cfg):
    """Batches ``(x, classes, weights)`` as tensors, forever."""
    if cfg.workers > 0:
        loader = torch.utils.data.DataLoader(_Tiles(examples, pick_p, t_in, t_out, cfg), batch_size=cfg.batch_size,
                                             num_workers=cfg.workers, persistent_workers=True, prefetch_factor=4)
        yield from loader
        return
    while True:
        batch = [_sample(examples[rng.choice(len(examples), p=pick_p)], t_in, t_out, rng, cfg)
                 for _ in range(cfg.batch_size)]
        yield tuple(torch.from_numpy(np.stack([b[i] for b in batch])) for i in range(3))


def weighted_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted by ``weights`` (0 = ignored), averaged over the
    total weight so that the loss scale does not depend on how much was annotated."""
    ce = F.cross_entropy(logits.float(), classes, reduction="none")
    total = weights.sum()
    return (ce * weights).sum() / total.clamp_min(1e-6)


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
    overwrite: bool = False,
    name: str | None = None,
    description: str | None = None,
) -> TrainingResult:
    """Train (or fine-tune) ``model`` on ``images`` and their ``labels`` (project convention).

    The model is not modified: a trained copy is returned in the :class:`TrainingResult`, the
    best one seen (by validation score, else by smoothed training loss). With ``checkpoint``
    the best model is also written there (atomically) every time it improves, and once more at
    the end; an existing file there is replaced only with ``overwrite``. Every file written
    carries its own card (``provenance``: the start model, iterations done, best iteration,
    ``finished``). ``cancel`` (threading.Event or callable) stops within one iteration, keeping
    the best model so far. On ``KeyboardInterrupt`` the best model so far (the latest weights
    before the first validation) is written to ``checkpoint`` and the interrupt is re-raised
    with the :class:`TrainingResult` as its ``result`` attribute. ``name`` and ``description``
    are the trained model's (default: the start model's).
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
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    from .predict import check_finite_weights

    check_finite_weights(model)
    model = copy.deepcopy(model)
    net = model.network.to(device).train()
    from .predict import check_image

    examples = [_Example(np.asarray(check_image(im)), np.asarray(lb), model, cfg, channel_axis)
                for im, lb in zip(images, labels)]
    examples = [e for e in examples if e.annotated.size]
    if not examples:
        raise ValueError("nothing is annotated: paint background (1) and cells (2, 3, ...) in the labels first")
    _refuse_unlearnable([e.labels for e in examples])
    n_ann = np.array([e.annotated.size for e in examples], dtype=float)
    pick_p = np.sqrt(n_ann) / np.sqrt(n_ann).sum()  # big images more often, small ones still seen
    t_in, t_out = _input_tile(model, cfg.tile)
    precision = resolve_precision(cfg.precision, device)
    _check_training_memory(model, t_in, cfg.batch_size, precision, device)
    bf16 = precision == "bfloat16"
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def lr_at(it):
        if cfg.lr_schedule == "constant":
            return cfg.learning_rate
        warm = min(20, cfg.iterations // 10)
        if it < warm:
            return cfg.learning_rate * (it + 1) / warm
        frac = (it - warm) / max(1, cfg.iterations - warm)
        return cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    best_state = None
    best_score, best_iter, ema = None, 0, None
    history: list[Progress] = []
    cancelled = False
    t0 = time.perf_counter()
    start_name = model.name
    start_provenance = copy.deepcopy(model.provenance)
    model.name = name or model.name
    model.description = description if description is not None else model.description
    saved = []  # paths this call has written

    def card(best_iteration: int, finished: bool) -> dict:
        # the file's own provenance: where it starts from and how far it got, never the start
        # model's card (that one is kept under "start_provenance")
        prov = {
            "trained_from": start_name,
            "iterations": len(history),
            "iterations_planned": cfg.iterations,
            "best_iteration": best_iteration,
            "finished": finished,
            "training_images": len(examples),
            "annotated_pixels": int(n_ann.sum()),
            "training": asdict(cfg),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if best_score is not None and validation:
            prov["best_validation_score"] = float(best_score)
        if start_provenance:
            prov["start_provenance"] = start_provenance
        return prov

    def save_best():
        if checkpoint is not None:
            snap = copy.deepcopy(model)
            snap.network.load_state_dict(best_state)
            snap.provenance = card(best_iter, finished=False)
            save_model(snap, checkpoint, overwrite=True)  # checked at entry; ours from now on
            saved.append(checkpoint)

    def finish(interrupted: bool) -> TrainingResult:
        nonlocal best_state, best_iter
        if best_iter == 0:
            # stopped before any checkpoint: the latest weights are the best we have
            best_state = copy.deepcopy(net.state_dict())
            best_iter = len(history)
        net.load_state_dict(best_state)
        net.eval()
        net.to("cpu").to(memory_format=torch.contiguous_format)
        model.provenance = card(best_iter, finished=not interrupted and len(history) == cfg.iterations)
        if checkpoint is not None and history:
            save_model(model, checkpoint, overwrite=True)
            saved.append(checkpoint)
        return TrainingResult(model, history, best_iter, best_score, interrupted, time.perf_counter() - t0,
                              checkpoint if saved else None)

    batches = _batches(examples, pick_p, t_in, t_out, rng, cfg)
    try:
        for it in range(cfg.iterations):
            if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                cancelled = True
                break
            lr = lr_at(it)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y, w = (t.to(device, non_blocking=True) for t in next(batches))
            if bf16:
                x = x.contiguous(memory_format=torch.channels_last)
                ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16)
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                logits = net(x)
            loss = weighted_cross_entropy(logits, y, w)
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
                # the best model: by validation score, or by smoothed training loss without validation data
                if validation:
                    net.eval()
                    score = validation_scores(model, validation, device=device, precision=precision)["score"]
                    net.train()
                    prog.validation_score = score
                else:
                    score = -ema
                if best_score is None or score >= best_score:
                    best_score, best_iter = score, it + 1
                    best_state = copy.deepcopy(net.state_dict())
                    save_best()
            prog.best_score = best_score
            history.append(prog)
            if callback is not None:
                callback(prog)
    except KeyboardInterrupt as e:
        # Ctrl-C (or SIGTERM from the command line): keep what was learnt, on disk too
        batches.close()  # stops tile workers, if any
        e.result = finish(interrupted=True)
        raise
    finally:
        batches.close()
    return finish(interrupted=cancelled)
