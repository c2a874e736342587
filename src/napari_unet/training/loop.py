"""One training run: its set-up (hold-out, distillation targets, sampler, judge) and the loop of iterations."""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings

import numpy as np
import torch

from ..device import autocast, resolve_device, resolve_precision
from ..modelfile import SegmentationModel
from ..tiling import is_cancelled
from .annotations import check_annotations
from .card import has_been_trained
from .config import Progress
from .distillation import distillation_loss, distillation_weight
from .examples import Example, check_training_memory, input_tile
from .holdout import HeldOutJudge, holdout_split, validation_scores
from .losses import weighted_cross_entropy
from .mixing import mix_weights
from .prior import keep_prior
from .sampling import Sampler, batches
from .schedule import LearningRateSchedule
from .smoothing import BEST_MODEL_SMOOTHING, smoothed
from .tracker import BestModelTracker

__all__ = ["Run", "run_loop", "say_kept"]


class Run:
    """Everything one training run works with: the working copy of the model on its device, the
    prepared examples, the tile sampler, the judge of iterations and the best-model tracker.
    ``loss(logits, classes, weights)`` is the supervised loss (default :func:`weighted_cross_entropy`)."""

    def __init__(self, model, images, checked, cfg, validation, channel_axis, checkpoint, name, loss=None):
        self.cfg, self.validation, self.notes = cfg, validation, []
        self.loss = loss or weighted_cross_entropy
        self.fine_tune = has_been_trained(model) if cfg.fine_tune is None else bool(cfg.fine_tune)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.model = copy.deepcopy(model)
        self.net = self.model.network.to(self.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.bf16 = self.precision == "bfloat16"
        # hold out part of the painted objects to judge the iterations against the start model
        train_labels, self.held_labels = list(checked), None
        if self.fine_tune and not validation and cfg.holdout > 0:
            train_labels, self.held_labels = holdout_split(checked, cfg.holdout, seed=cfg.seed)
            if not any(h.any() for h in self.held_labels):
                self.held_labels = None
        self.examples = [Example(np.asarray(im), np.asarray(lb), self.model, cfg, channel_axis)
                         for im, lb in zip(images, train_labels)]
        if not any(np.any(lb >= 2) for lb in checked):
            raise ValueError(
                f"the annotations hold no cell, only {sum(int(np.count_nonzero(lb == 1)) for lb in checked)} "
                "background pixels: a model trained on them finds nothing (an all-zero instance or binary mask means "
                "'no object here'); paint or include at least a few cells (label 2, 3, ...)"
            )
        for msg in check_annotations(checked):  # once the input is known to be usable
            self.note(msg)
        self.distill = cfg.distillation if self.fine_tune else 0.0
        # three classes, fine-tuning: painted cells teach "cell"; the start model keeps the boundary
        self.split_from_start = bool(self.fine_tune and cfg.split_from_start and model.config.n_classes == 3)
        if self.fine_tune:
            # the frozen start model's probabilities: distillation targets and stand-in scoring pixels
            from ..predict import predict_probabilities

            for ex in self.examples:
                ex.teacher = predict_probabilities(ex.raw, self.model, channel_axis=0, device=self.device,
                                                   precision=self.precision, scales=(1.0,))
        if self.distill > 0:
            for ex, lb in zip(self.examples, train_labels):
                painted = np.asarray(lb) > 0
                ex.distill = distillation_weight(painted, ex.teacher, cfg.distill_distance, cfg.distill_confidence,
                                                 unknown=painted & (ex.classes < 0))
        if not any(e.annotated.size for e in self.examples):
            raise ValueError("nothing is left to train on after holding out strokes: paint a few more")
        self.sampler = Sampler(self.examples, cfg, cfg.free_tiles if self.distill > 0 else 0.0)
        self.judge = None
        if self.fine_tune and not validation:
            if self.held_labels is not None:
                self.scored_on = "held-out strokes"
            else:
                self.scored_on = "painted pixels"
                self.note("Too few painted objects to hold some out for checking: the best iteration is judged on the "
                          "painted pixels themselves. Paint at least 4 cells and 4 background strokes for a fair check.")
            self.judge = HeldOutJudge(self.model, self.examples, self.held_labels or checked, checked, cfg)
        else:
            self.scored_on = "validation" if validation else "training loss"
        self.t_in, self.t_out = input_tile(self.model, cfg.tile)
        self.prior_scales, self.tile_norm = None, 0.0
        if self.fine_tune and cfg.keep_prior:
            # the painting's class mix must not move how readily the network calls a pixel cell
            self.prior_scales, per_tile = keep_prior(self.examples, self.sampler, self.t_out, cfg.seed,
                                                     self.split_from_start)
            self.tile_norm = per_tile * cfg.batch_size
        # cfg.mix_with_start: the checks score and keep start + share x (fine-tuned - start)
        self.mix = cfg.mix_with_start if self.fine_tune else 1.0
        copies = (4 if cfg.optimizer == "adam" else 3) + (cfg.weight_average > 0) + (self.mix < 1)
        check_training_memory(self.model, self.t_in, cfg.batch_size, self.precision, self.device,
                              weight_copies=copies)
        if self.bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.start_state = copy.deepcopy(self.net.state_dict()) if self.mix < 1 else None
        self.best = BestModelTracker(self.model, cfg, checkpoint=checkpoint, name=name, n_images=len(self.examples))

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)

    def evaluate(self) -> float:
        """The score of the current weights (validation data, or the held-out judge)."""
        self.net.eval()
        if self.validation:
            s = validation_scores(self.model, self.validation, device=self.device, precision=self.precision)["score"]
        else:
            s = self.judge.score(self.net, self.device, self.bf16)
        self.net.to(self.device).train()
        return s

    def optimizer(self):
        cfg = self.cfg
        if cfg.train_layers == "decoder":
            for p in self.net.down.parameters():
                p.requires_grad_(False)
        params = [p for p in self.net.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

    def step(self, opt, lr: float, batch) -> float:
        """One optimiser step on ``batch`` at learning rate ``lr``; the loss."""
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, w, dw, tp = (None if t is None else t.to(self.device, non_blocking=True) for t in batch)
        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.bf16):
            logits = self.net(x)
        loss = self.loss(logits, y, w, self.split_from_start) if self.split_from_start else self.loss(logits, y, w)
        if self.tile_norm > 0:  # cfg.keep_prior: divided by the mean painted weight of a batch, not its own
            loss = loss * (w.sum() / self.tile_norm)
        if self.distill > 0:
            loss = loss + self.distill * distillation_loss(logits, tp, dw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def averaged(self):
        """The moving average of the weights (``cfg.weight_average``), or None when it is off."""
        if not self.cfg.weight_average:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        return AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.weight_average), use_buffers=True)

    def trained_model(self) -> SegmentationModel:
        """The working copy with the best weights, on the CPU, ready to save."""
        self.net.load_state_dict(self.best.state)
        self.net.eval()
        self.net.to("cpu").to(memory_format=torch.contiguous_format)
        return self.model


def run_loop(run: Run, t0: float, callback, cancel):
    """The iterations: ``(history, cancelled, the KeyboardInterrupt that stopped it or None)``."""
    cfg, net = run.cfg, run.net
    run.net.train()
    opt = run.optimizer()
    lr_at = LearningRateSchedule.from_config(cfg)
    history: list[Progress] = []
    cancelled, interrupted, ema = False, None, None
    tiles = batches(run.sampler, run.t_in, run.t_out, run.rng, cfg)
    avg = run.averaged()
    try:
        for it in range(cfg.iterations):
            if is_cancelled(cancel):
                cancelled = True
                break
            lr = lr_at(it)
            lv = run.step(opt, lr, next(tiles))
            if not math.isfinite(lv):
                raise FloatingPointError(
                    f"the loss became {lv} at iteration {it + 1}: lower the learning rate (now {cfg.learning_rate})"
                )
            if avg is not None:
                avg.update_parameters(net)
            ema = smoothed(ema, lv, BEST_MODEL_SMOOTHING)
            prog = Progress(it + 1, cfg.iterations, lv, lr, seconds=time.perf_counter() - t0)
            if (it + 1) % cfg.validate_every == 0 or it + 1 == cfg.iterations:
                with _checked_weights(net, avg, run.start_state, run.mix):
                    if run.scored_on == "training loss":
                        score = -ema
                    else:
                        score = prog.validation_score = run.evaluate()
                    run.best.consider(score, it + 1, net, done=len(history))
            prog.best_score = run.best.score
            history.append(prog)
            if callback is not None:
                callback(prog)
    except KeyboardInterrupt as e:
        # Ctrl-C (or SIGTERM from the command line): keep what was learnt, on disk too
        interrupted, cancelled = e, True
    finally:
        tiles.close()  # stops tile workers, if any
    if run.best.state is None:
        # cancelled before any checkpoint: the latest (averaged, mixed) weights are the best we have
        with _checked_weights(net, avg, run.start_state, run.mix):
            run.best.state, run.best.iteration = copy.deepcopy(net.state_dict()), len(history)
    for p in net.parameters():
        p.requires_grad_(True)
    return history, cancelled, interrupted


@contextlib.contextmanager
def _checked_weights(net, avg, start=None, share: float = 1.0):
    """``net`` holds the weights a check scores and keeps inside the block: the moving average
    of ``avg`` (when it is on and has seen a step) or its own, moved only ``share`` of the way
    from ``start`` when ``start`` is given (:func:`~.mixing.mix_weights`); its own weights again
    after it."""
    averaged = avg is not None and int(avg.n_averaged) > 0
    mixed = start is not None and share < 1
    if not (averaged or mixed):
        yield
        return
    own = copy.deepcopy(net.state_dict())
    state = avg.module.state_dict() if averaged else own
    if mixed:
        state = mix_weights(start, state, share)
    net.load_state_dict(state)
    try:
        yield
    finally:
        net.load_state_dict(own)


def say_kept(run: Run, history, start_score) -> None:
    """The plain-words note that the start model was kept, and why."""
    tried = [p.validation_score for p in history if p.validation_score is not None]
    start_name = run.best.start_name
    if tried:
        judge = run.judge
        why = (f" {judge.drifted} of the {len(tried)} fine-tuned checks scored higher (best {judge.best_capped:.3f}) "
               "but moved the outlines of objects nobody painted, so they were not taken."
               if judge is not None and judge.drifted else "")
        run.note(f"Fine-tuning did not beat the start model on the {run.scored_on} (start {start_score:.3f}, best "
                 f"fine-tuned {max(tried):.3f}): keeping the start model {start_name!r} unchanged.{why} Paint where "
                 "it is wrong, both cells and background, and try again.")
    elif history:
        run.note(f"Stopped before the first check against the start model: keeping {start_name!r} unchanged.")
