"""The settings of :func:`napari_unet.train.train` and what it reports (progress, result)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..modelfile import SegmentationModel

__all__ = ["TrainingConfig", "STROKE_DEFAULTS", "Progress", "TrainingResult"]


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
    counts the IoU of the predicted object that matches it above ``match_iou``; a cell that no
    object matches, because it was lost, merged with a neighbour or split, counts only
    ``unmatched_credit`` times its best IoU, so that a model that starts to find cells the start
    model missed still scores above it, while a merge stays far below a match) and the held-out
    background by pixel agreement, and up to ``anchor_objects`` of the start model's own objects
    far from the strokes must stay as they were (weighted by how well it did on the painted
    cells; those a fine-tuned network still finds must keep their outlines to within
    ``anchor_drift`` mean IoU, or ``anchor_drift_per_gain`` times what it gained on the held-out
    painting when that is more, or it cannot replace the start model);
    ``"pixels"`` by per-class pixel IoU, which cannot see merged cells. A fine-tuned iteration
    replaces the start model only when it beats the start's score by more than ``min_gain``
    (a smaller gain on a few held-out cells is within the judge's noise, and the start model
    is the one known to work on the rest of the image).
    ``train_layers="decoder"`` freezes the contracting path.

    Three-class networks: ``unknown_rims`` leaves untrained a painted cell's rim next to
    unpainted pixels (cell edge or end of the painting: nobody knows), and fine-tuning
    distills the start model there; ``split_from_start`` (fine-tuning only) scores the other
    painted cell pixels as "cell" (interior or boundary) instead of "interior", so that the
    strokes teach cell against background and the start model keeps drawing the boundary
    (docs/training.md, "What strokes can and cannot say about the boundary").

    ``keep_prior`` (fine-tuning only): the painted classes are weighed so that the start model's
    pulls on the class scores cancel (:mod:`napari_unet.training.prior`), and each batch's
    supervised loss is divided by the mean painted weight of a batch rather than its own, so that
    the painting's class mix (cells only, scribbles, a fully labelled frame) does not make every
    cell grow or shrink.

    ``weight_average`` (0 = off, the paper's choice) is the decay of an exponential moving
    average of the weights (Polyak averaging, no bias correction: it starts from the weights
    after the first step); when on, it is the averaged weights that are checked and kept,
    which smooths the noise of small batches (docs/models.md). Without validation data or
    held-out strokes, the checks score the smoothed training loss of the live weights and
    keep the average at the best of them.

    ``mix_with_start`` (fine-tuning only; 0.5, measured; 1 = off) is the share of the way
    from the start model's weights to the fine-tuned ones that the checks score and keep (weight-space
    interpolation, WiSE-FT; :mod:`napari_unet.training.mixing`): the judge then weighs, and
    the run returns, ``start + share x (fine-tuned - start)``, which keeps more of what the
    start model knew on the images nobody painted (docs/training.md).
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
    class_balance_power: float = 1.0  # 1: the paper's frequency balance; 0.5: square-root weights
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
    boundary_width: int | None = None  # three-class networks: boundary width in pixels; None: the model's own (1)
    unknown_rims: bool = True  # three-class networks: a painted cell's rim next to unpainted pixels is not trained as interior
    split_from_start: bool = True  # three-class fine-tuning: strokes teach cell vs background, the start model the interior/boundary split
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
    holdout: float = 0.4  # fine-tuning without validation data: share of painted objects held out (measured)
    holdout_score: str = "objects"  # "objects": held-out cells matched as objects; "pixels": per-class pixel IoU
    match_iou: float = 0.5  # "objects": a held-out cell counts when one predicted object overlaps it above this IoU
    unmatched_credit: float = 0.5  # "objects": fraction of its best IoU that an unmatched held-out cell counts
    anchor_objects: int = 12  # "objects": start-model objects far from the strokes that must stay as they were
    anchor_drift: float = 0.05  # "objects": how far (mean IoU) the outlines of those objects may move; >= 0.5: any
    anchor_drift_per_gain: float = 0.5  # "objects": the outlines may also move this many times the held-out gain
    min_gain: float = 0.02  # fine-tuning: a fine-tuned iteration must beat the start model's score by more than this
    train_layers: str = "all"  # "all" or "decoder" (contracting path frozen)
    keep_prior: bool = True  # fine-tuning: painted classes weighed so that the start model's class prior stays
    weight_average: float = 0.0  # decay of the moving average of the weights that is checked and kept; 0: off
    mix_with_start: float = 0.5  # fine-tuning: checks score and keep start + this x (fine-tuned - start); 1: off

    def __post_init__(self):
        for name in ("iterations", "tile", "batch_size", "validate_every"):
            v = getattr(self, name)
            if not _is_count(v):
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
        if not (math.isfinite(self.class_balance_power) and 0 <= self.class_balance_power <= 1):
            raise ValueError(f"class_balance_power must be between 0 and 1, not {self.class_balance_power}")
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
        if not (math.isfinite(self.min_gain) and self.min_gain >= 0):
            raise ValueError("min_gain must be a number >= 0")
        if not 0 <= self.anchor_drift <= 1:
            raise ValueError("anchor_drift must be between 0 and 1 (1: outlines may move freely)")
        if not (math.isfinite(self.anchor_drift_per_gain) and self.anchor_drift_per_gain >= 0):
            raise ValueError("anchor_drift_per_gain must be a number >= 0 (0: the outlines may move anchor_drift only)")
        if self.anchor_objects < 0:
            raise ValueError("anchor_objects must be 0 or more")
        if not 0 <= self.unmatched_credit < 1:
            raise ValueError("unmatched_credit must be in [0, 1)")
        bw = self.boundary_width
        if bw is not None and not _is_count(bw):
            raise ValueError(f"boundary_width must be a whole number of pixels >= 1 (or None), not {bw!r}")
        if not (math.isfinite(self.weight_average) and 0 <= self.weight_average < 1):
            raise ValueError(f"weight_average is a decay in [0, 1) (0: off, e.g. 0.999), not {self.weight_average}")
        if not (math.isfinite(self.mix_with_start) and 0 < self.mix_with_start <= 1):
            raise ValueError(f"mix_with_start is the share of the way from the start model to the fine-tuned one, "
                             f"above 0 and at most 1 (1: the fine-tuned weights), not {self.mix_with_start}")
        if self.train_layers not in ("all", "decoder"):
            raise ValueError("train_layers must be 'all' or 'decoder'")

    def boundary_width_for(self, model: SegmentationModel) -> int:
        """The boundary width of the training targets for ``model``: ``boundary_width``, or when
        it is None the width the model was trained with (its card), so that fine-tuning teaches
        the boundary the network already draws; 1 for a new network."""
        if self.boundary_width is not None:
            return int(self.boundary_width)
        training = (model.provenance or {}).get("training")
        width = training.get("boundary_width") if isinstance(training, dict) else None
        return int(width) if _is_count(width) else 1

    @classmethod
    def for_strokes(cls, **overrides) -> TrainingConfig:
        """The defaults measured for fine-tuning a trained model from a few painted strokes
        (docs/training.md), with ``overrides`` applied."""
        base = dict(STROKE_DEFAULTS)
        base.update(overrides)
        return cls(**base)


def _is_count(v) -> bool:
    """Whether ``v`` is a whole number >= 1 (not a bool): iterations, tile, pixels."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


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
    held_out: dict | None = None  # {"cells": n, "background_strokes": m} held out to judge (None: none held out)

    def check_words(self) -> str:
        """What the returned model was judged on against the start model, and both scores, in
        plain words (empty when it was not judged against the start model)."""
        if self.start_score is None or self.best_score is None:
            return ""
        if self.scored_on == "held-out strokes" and self.held_out:
            c, b = self.held_out["cells"], self.held_out["background_strokes"]
            parts = [f"{c} painted cell{'s' * (c != 1)}"] * bool(c) + [f"{b} background stroke{'s' * (b != 1)}"] * bool(b)
            what = f"the {' and '.join(parts)} held out from training"
        else:
            what = {"validation": "the validation images"}.get(self.scored_on, f"the {self.scored_on}")
        return f"Score on {what}: start model {self.start_score:.2f}, kept model {self.best_score:.2f}."
