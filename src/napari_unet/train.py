"""Training and fine-tuning from few, partial annotations (the paper's second half).

Labels follow the project convention (see :mod:`napari_unet.labels`): 0 = not annotated
(ignored), 1 = background, >= 2 = one cell each. The loss is the paper's pixel-wise softmax
cross-entropy weighted by its weight map (class balance + border term between touching
cells); unannotated pixels weigh 0 in it. Tiles are centred on painted pixels, every painted
class (and the gaps between painted cells) equally often however few pixels it has, so a few
strokes on one large image train as well as a folder of fully labelled ones.

Fine-tuning a trained model (see :attr:`TrainingConfig.fine_tune`) adds two safeguards
(docs/training.md):

* distillation: on pixels nobody painted, the start model's own probabilities stay a soft
  target (a frozen copy of it, KL divergence), weighted by how far the pixel is from the
  strokes and how confident the start model was, so the strokes correct what they touch and
  what looks like it while the rest stays as it was;
* never worse than the start: part of the painted objects is held out (when no validation
  data is given), the start model is scored on it first, and the best iteration by that
  score, the start model included, is what is returned.

The loop is plain Python: ``callback`` receives a :class:`Progress` after every iteration
(the napari widget plots it; the command line shows a tqdm bar), ``cancel`` stops it within one
iteration, and the best model so far is what is returned and, with ``checkpoint``, what is on
disk.
The parts live in :mod:`napari_unet.training`, one module each; this module holds the loop and
re-exports the public names.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .modelfile import SegmentationModel
from .training.annotations import check_annotations, count_objects
from .training.card import write_card
from .training.config import STROKE_DEFAULTS, Progress, TrainingConfig, TrainingResult
from .training.distillation import distillation_weight
from .training.examples import Example, checked_input, input_tile
from .training.holdout import holdout_split, matched_cell_scores, validation_scores
from .training.loop import Run, run_loop, say_kept
from .training.losses import weighted_cross_entropy
from .training.sampling import sample_tile
from .training.schedule import LearningRateSchedule
from .training.tracker import BestModelTracker

__all__ = [
    "TrainingConfig",
    "Progress",
    "TrainingResult",
    "train",
    "validation_scores",
    "check_annotations",
    "holdout_split",
    "distillation_weight",
    "weighted_cross_entropy",
    "matched_cell_scores",
    "LearningRateSchedule",
    "BestModelTracker",
    "STROKE_DEFAULTS",
]

# the names earlier versions of this module had (scripts and tests use them)
_Example, _sample, _input_tile = Example, sample_tile, input_tile


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
    image_names: Sequence[str] | None = None,
    overwrite: bool = False,
    name: str | None = None,
    description: str | None = None,
) -> TrainingResult:
    """Train (or fine-tune) ``model`` on ``images`` and their ``labels`` (project convention).

    The model is not modified: a trained copy is returned in the :class:`TrainingResult`, the
    best one seen (by validation score; when fine-tuning without validation data by the score
    on held-out strokes, the start model included; else by smoothed training loss). With
    ``checkpoint`` the best model is also written there (atomically) every time it improves.
    ``cancel`` (threading.Event or callable) stops within one iteration, keeping the best model
    so far. ``image_names`` (file or layer names) go on the fine-tuned model's card.
    Remarks on the painting (:func:`check_annotations`) are issued as warnings and returned
    in ``TrainingResult.warnings``. An existing ``checkpoint`` file is replaced only with
    ``overwrite``; every file written carries its own card (iterations done of planned,
    ``finished``). On ``KeyboardInterrupt`` the best model so far is written to ``checkpoint``
    and the interrupt re-raised with the :class:`TrainingResult` as its ``result``. ``name``
    and ``description`` are the trained model's (default: the start model's; a fine-tuned
    model describes itself).
    """
    cfg = config or TrainingConfig()
    cfg = replace(cfg, boundary_width=cfg.boundary_width_for(model))  # the card records the width used
    if checkpoint is not None:
        from .io import check_output

        checkpoint = check_output(checkpoint, overwrite=overwrite)
    images, checked = checked_input(model, images, labels)
    t0 = time.perf_counter()
    run = Run(model, images, checked, cfg, validation, channel_axis, checkpoint, name,
              loss=weighted_cross_entropy)  # looked up at call time: tests replace it
    start_score = None
    if run.fine_tune and run.scored_on != "training loss":
        start_score = run.evaluate()
        run.best.start(copy.deepcopy(run.net.state_dict()), start_score)
    history, cancelled, interrupted = run_loop(run, t0, callback, cancel)
    held = count_objects(run.held_labels) if run.held_labels is not None else None
    seconds = time.perf_counter() - t0
    if run.fine_tune and run.best.iteration == 0:
        say_kept(run, history, start_score)
        kept = copy.deepcopy(model)
        run.best.write(kept)
        result = TrainingResult(kept, history, 0, run.best.score, cancelled, seconds, start_score, True, run.notes,
                                run.scored_on, checkpoint if run.best.saved else None, held)
        return _finish(result, interrupted)
    trained = run.trained_model()
    write_card(trained, model, cfg, done=len(history), best_iteration=run.best.iteration, n_images=len(run.examples),
               painted_pixels=int(sum(np.count_nonzero(lb) for lb in checked)),
               finished=not cancelled and len(history) == cfg.iterations, fine_tune=run.fine_tune,
               start_provenance=copy.deepcopy(model.provenance), labels=checked, held_labels=run.held_labels,
               image_names=image_names, scored_on=run.scored_on, start_score=start_score,
               best_score=run.best.score, distillation=run.distill, mixed_with_start=run.mix)
    if name:
        trained.name = name
    if description is not None:
        trained.description = description
    if history:
        run.best.write(trained)
    result = TrainingResult(trained, history, run.best.iteration, run.best.score, cancelled, seconds, start_score,
                            False, run.notes, run.scored_on, checkpoint if run.best.saved else None, held)
    return _finish(result, interrupted)


def _finish(result: TrainingResult, interrupted: BaseException | None) -> TrainingResult:
    """Return ``result``, or re-raise the interrupt that ended the run with ``result`` on it."""
    if interrupted is not None:
        interrupted.result = result
        raise interrupted
    return result
