"""Judging iterations against the start model: held-out painted objects (split and scoring) and validation data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi

from ..device import autocast
from ..labels import separate_touching, to_classes, validate_labels
from ..model import alignment
from ..modelfile import SegmentationModel
from .annotations import painted_objects
from .config import TrainingConfig
from .examples import Example

__all__ = ["allowed_drift", "holdout_split", "matched_cell_scores", "HeldOutJudge", "validation_scores",
           "HELD_OUT_PIXELS", "WINDOW_CHUNK"]

#: held-out pixels at which the held-out strokes weigh half as much as the agreement with the start model
HELD_OUT_PIXELS = 1000


def holdout_split(labels_list, fraction: float = 0.4, seed: int = 0, min_objects: int = 4):
    """Split painted labels into a training part and a held-out part, by whole objects.

    Objects are the painted cells (one label value >= 2 each) and the background strokes
    (8-connected pieces of label 1). For cells and for background separately: when at least
    ``min_objects`` were painted, ``round(fraction * n)`` of them (at least one), drawn at
    random with ``seed``, are held out; with fewer, none of that kind is. Returns
    ``(train_labels, held_labels)``, two lists shaped like the input: held-out pixels are 0 in
    the first, all other pixels 0 in the second.
    """
    rng = np.random.default_rng(seed)
    bg, cells, comps = painted_objects(labels_list)
    held = [np.zeros(np.shape(lab), bool) for lab in labels_list]
    for objs, is_bg in ((bg, True), (cells, False)):
        if fraction <= 0 or len(objs) < min_objects:
            continue
        k = max(1, int(round(fraction * len(objs))))
        for j in rng.choice(len(objs), size=k, replace=False):
            i, v = objs[j]
            held[i] |= (comps[i] == v) if is_bg else (np.asarray(labels_list[i]) == v)
    train_l = [np.where(h, 0, np.asarray(lab)).astype(np.asarray(lab).dtype) for h, lab in zip(held, labels_list)]
    held_l = [np.where(h, np.asarray(lab), 0).astype(np.asarray(lab).dtype) for h, lab in zip(held, labels_list)]
    return train_l, held_l


@dataclass
class _Region:
    example: int
    y0: int
    x0: int
    truth: np.ndarray  # classes (h, w), -1 = not scored


def _regions_of(ex_index: int, classes: np.ndarray, chunk: int = 256, pad: int = 4) -> list[_Region]:
    """Windows (at most ``chunk`` pixels a side) covering the scored pixels of ``classes``."""
    out = []
    H, W = classes.shape
    comp, n = ndi.label(classes >= 0, structure=np.ones((3, 3), bool))
    for sl in ndi.find_objects(comp):
        if sl is None:
            continue
        ya, yb = max(sl[0].start - pad, 0), min(sl[0].stop + pad, H)
        xa, xb = max(sl[1].start - pad, 0), min(sl[1].stop + pad, W)
        for y in range(ya, yb, chunk):
            for x in range(xa, xb, chunk):
                t = classes[y : min(y + chunk, yb), x : min(x + chunk, xb)]
                if (t >= 0).any():
                    out.append(_Region(ex_index, y, x, t.copy()))
    # windows of neighbouring objects overlap: score every pixel once
    seen = {}
    for r in out:
        h, w = r.truth.shape
        m = seen.setdefault(r.example, np.zeros((H, W), bool))
        block = m[r.y0 : r.y0 + h, r.x0 : r.x0 + w]
        r.truth = np.where(block, -1, r.truth)
        block |= r.truth >= 0
    return [r for r in out if (r.truth >= 0).any()]


def _stand_ins(examples: list[Example], far_from_strokes: list[np.ndarray], cls: int, rng: np.random.Generator,
               n: int = 4, size: int = 48) -> list[_Region]:
    """Windows of pixels the start model is sure belong to class ``cls`` (p > 0.9) and far from
    any stroke (``far_from_strokes`` masks): the start model's answer is the reference there, so
    that a model that turns unpainted background into cells (or the reverse) scores worse
    than the start model."""
    pools = []
    for i, (ex, far) in enumerate(zip(examples, far_from_strokes)):
        if ex.teacher is not None:
            sure = (ex.teacher[cls] > 0.9) & far
            pools.append((i, sure, np.flatnonzero(sure)))
    total = sum(f.size for _, _, f in pools)
    if not total:
        return []
    starts = np.cumsum([0] + [f.size for _, _, f in pools])
    out = []
    for j in np.sort(rng.choice(total, size=min(n, total), replace=False)):
        q = int(np.searchsorted(starts, j, side="right") - 1)
        i, sure, flat = pools[q]
        H, W = sure.shape
        y, x = divmod(int(flat[j - starts[q]]), W)
        y0 = int(min(max(y - size // 2, 0), max(H - size, 0)))
        x0 = int(min(max(x - size // 2, 0), max(W - size, 0)))
        win = sure[y0 : y0 + size, x0 : x0 + size]
        out.append(_Region(i, y0, x0, np.where(win, cls, -1).astype(np.int64)))
    return out


def _object_anchors(model: SegmentationModel, examples: list[Example], far_from_strokes: list[np.ndarray],
                    rng: np.random.Generator, n: int = 12) -> list[_CellWindow]:
    """Windows around up to ``n`` objects of the start model's own instance labels that lie
    wholly far from any stroke (``far_from_strokes`` masks), as cells to score like held-out
    ones: a fine-tuned model that grows, shrinks, merges or loses the objects nobody painted
    scores worse there than the start model, which pixels where it was sure cannot show
    (object borders are where it is least sure)."""
    from ..postprocess import labels_from_model_output

    pool = []
    labelled = {}
    for i, (ex, far) in enumerate(zip(examples, far_from_strokes)):
        if ex.teacher is None:
            continue
        lab = np.asarray(labels_from_model_output(ex.teacher, model))
        if not lab.any():
            continue
        ids = np.unique(lab[lab > 0])
        # objects with a pixel near a stroke are not reference objects
        near_ids = np.unique(lab[(lab > 0) & ~far])
        ids = np.setdiff1d(ids, near_ids)
        labelled[i] = lab
        pool += [(i, int(v)) for v in ids]
    if not pool:
        return []
    chosen = [pool[j] for j in np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))]
    out = []
    for i in sorted({i for i, _ in chosen}):
        lab = labelled[i]
        keep = [v for j, v in chosen if j == i]
        cells = np.where(np.isin(lab, keep), lab + 1, 0)  # ids >= 2, as painted cells
        out += _cell_windows(i, cells)
    return out


#: output pixels a side above which a judge's window is computed in pieces (bounded memory)
WINDOW_CHUNK = 512


def _window_probabilities(net, model: SegmentationModel, image: np.ndarray, y0: int, x0: int, h: int, w: int,
                          device, bf16: bool) -> np.ndarray:
    """Class probabilities (K, h, w) of the (normalised, (C, H, W)) ``image`` window at
    (y0, x0), with the context the network needs read mirrored around it. Windows larger than
    ``WINDOW_CHUNK`` a side (a fully painted image) are computed in pieces, each with its own
    context from the image, so that memory stays bounded."""
    if h > WINDOW_CHUNK or w > WINDOW_CHUNK:
        out = None
        for cy in range(0, h, WINDOW_CHUNK):
            for cx in range(0, w, WINDOW_CHUNK):
                ch, cw = min(WINDOW_CHUNK, h - cy), min(WINDOW_CHUNK, w - cx)
                part = _window_probabilities(net, model, image, y0 + cy, x0 + cx, ch, cw, device, bf16)
                if out is None:
                    out = np.empty((part.shape[0], h, w), part.dtype)
                out[:, cy : cy + ch, cx : cx + cw] = part
        return out
    from ..tileplan import min_tile_for as _min_tile_for
    from ..tileplan import tile_margin
    from ..tiling import read_mirrored

    config = model.config
    same = config.padding == "same"
    margin = tile_margin(config)
    # windows start on the pooling grid, as the tiles of inference do (same output there)
    a = alignment(config)
    dy, dx = y0 % a, x0 % a
    y0, x0, h0, w0, h, w = y0 - dy, x0 - dx, h, w, h + dy, w + dx
    th, tw = _min_tile_for(config, h, margin), _min_tile_for(config, w, margin)
    x = torch.from_numpy(np.ascontiguousarray(read_mirrored(image, y0 - margin, x0 - margin, th, tw)[None])).to(device)
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, bf16):
        y = torch.softmax(net(x).float(), dim=1)[0]
    y = y[:, margin : margin + h, margin : margin + w] if same else y[:, :h, :w]
    return y[:, dy : dy + h0, dx : dx + w0].cpu().numpy()


def _predicted_classes(probs: np.ndarray, model: SegmentationModel) -> np.ndarray:
    """Class per pixel as the model's post-processing sees it: the foreground class where its
    probability is above the model's threshold, else the most probable other class."""
    fg = model.foreground_class
    thr = model.postprocessing.threshold
    if probs.shape[0] == 3:  # background / interior / boundary: cell where interior + boundary > thr
        return np.where(probs[1] + probs[2] > thr, 1 + probs[1:].argmax(axis=0), 0)
    others = probs.copy()
    others[fg] = -1.0
    return np.where(probs[fg] > thr, fg, others.argmax(axis=0))


def _region_score(net, model: SegmentationModel, examples: list[Example], regions: list[_Region], device,
                  bf16: bool) -> float:
    """Mean over the classes present in the truth of the per-class IoU on the scored pixels."""
    k = model.config.n_classes
    conf = np.zeros((k, k), np.int64)
    for r in regions:
        h, w = r.truth.shape
        probs = _window_probabilities(net, model, examples[r.example].image, r.y0, r.x0, h, w, device, bf16)
        pred = _predicted_classes(probs, model)
        m = r.truth >= 0
        conf += np.bincount(r.truth[m] * k + pred[m], minlength=k * k).reshape(k, k)
    ious = []
    for c in range(k):
        n_truth, n_pred, tp = conf[c].sum(), conf[:, c].sum(), conf[c, c]
        if n_truth:
            ious.append(tp / (n_truth + n_pred - tp))
    return float(np.mean(ious)) if ious else 0.0


@dataclass
class _CellWindow:
    example: int
    y0: int
    x0: int
    cells: np.ndarray  # painted cell ids (h, w) to score as objects, 0 elsewhere


def _cell_windows(ex_index: int, labels: np.ndarray, pad: int = 24) -> list[_CellWindow]:
    """Windows around the painted cells of ``labels`` (groups of cells close to each other
    share one), with a margin of ``pad`` pixels or the largest cell's extent if that is larger,
    so that a predicted object that merges a cell with an unpainted neighbour of its size
    shows as (about twice) larger than the cell, however large the cells are."""
    lab = np.asarray(labels)
    cells = np.where(lab >= 2, lab, 0)
    if not cells.any():
        return []
    extent = max(max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
                 for sl in ndi.find_objects(cells) if sl is not None)
    near = ndi.distance_transform_edt(cells == 0) <= max(pad, extent)
    comp, _ = ndi.label(near, structure=np.ones((3, 3), bool))
    out = []
    for sl in ndi.find_objects(comp):
        if sl is not None:
            win = cells[sl]
            if win.any():
                out.append(_CellWindow(ex_index, sl[0].start, sl[1].start, win.copy()))
    return out


def matched_cell_scores(predicted: np.ndarray, cells: np.ndarray, match_iou: float = 0.5,
                        unmatched_credit: float = 0.0) -> list[float]:
    """Per painted cell (ids >= 1 in ``cells``): the IoU of the predicted instance (ids >= 1 in
    ``predicted``) that matches it above ``match_iou``; when none does (the cell was lost,
    merged with a neighbour into one object, or split), ``unmatched_credit`` times the best IoU
    of any predicted instance (0 by default). One value per cell, in id order."""
    predicted, cells = np.asarray(predicted), np.asarray(cells)
    sizes = np.bincount(predicted.ravel())
    out = []
    for v in np.unique(cells[cells > 0]):
        m = cells == v
        ids, overlap = np.unique(predicted[m], return_counts=True)
        keep = ids > 0
        ious = overlap[keep] / (m.sum() + sizes[ids[keep]] - overlap[keep]) if keep.any() else np.zeros(0)
        best = float(ious.max()) if ious.size else 0.0
        out.append(best if best > match_iou else unmatched_credit * best)
    return out


#: a painted cell whose area exceeds this many times the disc of its largest inscribed circle,
#: and whose inscribed radius is at most SCRIBBLE_RADIUS pixels (napari's default brush is 10
#: pixels across), is a stroke inside a cell (a scribble), not a whole cell
SCRIBBLE_ELONGATION = 3.0
SCRIBBLE_RADIUS = 5.0


def partly_painted(labels) -> np.ndarray:
    """Bool mask (H, W) of the painted cells (values >= 2 of ``labels``) that are strokes
    inside a cell rather than whole cells: brush-wide (largest inscribed circle of radius at
    most ``SCRIBBLE_RADIUS``) and thin (area more than ``SCRIBBLE_ELONGATION`` times that
    circle's; a whole nucleus, round or oval up to about 3:1, is below it, a scribble along a
    cell far above). Their outline says nothing about the cell's, so they are not scored as
    objects."""
    lab = np.asarray(labels)
    cells = np.where(lab >= 2, lab, 0)
    out = np.zeros(lab.shape, bool)
    for v, sl in enumerate(ndi.find_objects(cells), start=1):
        if sl is None:
            continue
        m = np.pad(cells[sl] == v, 1)
        radius = float(ndi.distance_transform_edt(m).max())
        if radius <= SCRIBBLE_RADIUS and m.sum() > SCRIBBLE_ELONGATION * np.pi * radius * radius:
            out[sl] |= m[1:-1, 1:-1]
    return out


def _cell_recall(net, model: SegmentationModel, examples: list[Example], regions: list[_Region], device,
                 bf16: bool) -> float:
    """The share of the scored pixels of ``regions`` (truth >= 0) predicted as a cell (any
    class but background, as the post-processing sees it)."""
    hit = total = 0
    for r in regions:
        h, w = r.truth.shape
        probs = _window_probabilities(net, model, examples[r.example].image, r.y0, r.x0, h, w, device, bf16)
        m = r.truth >= 0
        hit += int(np.count_nonzero(_predicted_classes(probs, model)[m] != 0))
        total += int(np.count_nonzero(m))
    return hit / total if total else 0.0


def _cell_scores(net, model: SegmentationModel, examples: list[Example], windows: list[_CellWindow], device,
                 bf16: bool, match_iou: float, unmatched_credit: float = 0.0) -> list[float]:
    """:func:`matched_cell_scores` of every cell in ``windows`` with the model's own
    post-processing (threshold, seeds, smoothing, minimum size) on the predicted window."""
    from ..postprocess import labels_from_model_output

    scores = []
    for w in windows:
        h, wd = w.cells.shape
        probs = _window_probabilities(net, model, examples[w.example].image, w.y0, w.x0, h, wd, device, bf16)
        scores += matched_cell_scores(labels_from_model_output(probs, model), w.cells, match_iou, unmatched_credit)
    return scores


def _cell_score(net, model: SegmentationModel, examples: list[Example], windows: list[_CellWindow], device,
                bf16: bool, match_iou: float, unmatched_credit: float = 0.0) -> float:
    """Mean of :func:`_cell_scores` (0 without cells)."""
    scores = _cell_scores(net, model, examples, windows, device, bf16, match_iou, unmatched_credit)
    return float(np.mean(scores)) if scores else 0.0


def validation_scores(model: SegmentationModel, pairs, device="auto", precision="auto") -> dict:
    """Scores of ``model`` on ``(image, labels)`` pairs (labels in the convention): foreground
    IoU over annotated pixels, and average precision at IoU 0.5 when labels are complete."""
    from ..metrics import average_precision
    from ..postprocess import labels_from_model_output
    from ..predict import foreground_probability, predict_probabilities

    ious, aps = [], []
    for image, labels in pairs:
        lab = validate_labels(labels)
        probs = predict_probabilities(image, model, device=device, precision=precision, scales=(1.0,))
        fg = foreground_probability(probs, model) > model.postprocessing.threshold
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


def allowed_drift(held: float | None, start_held: float | None, anchor_drift: float, per_gain: float) -> float:
    """How far (mean IoU) the start model's outlines may move for a network that scores ``held``
    on the held-out painting where the start model scored ``start_held``: ``anchor_drift``, or
    ``per_gain`` times the gain when that is more (no gain when either score is None)."""
    gain = held - start_held if held is not None and start_held is not None else 0.0
    return max(anchor_drift, per_gain * gain)


class HeldOutJudge:
    """Scores a network on painted objects it did not train on (``scored_labels``: the held-out
    part, or all the painting when too little was painted to hold some out), plus its agreement
    with the start model where that was sure and nobody painted (``painted``: the painted labels,
    or bool masks of the painted pixels).

    With ``cfg.holdout_score == "objects"`` the held-out cells count as objects
    (:func:`matched_cell_scores` under the model's post-processing, so a merge or a loss shows)
    and the held-out background by pixel agreement; with ``"pixels"`` by per-class pixel IoU.
    The held-out part weighs ``n / (n + HELD_OUT_PIXELS)`` (``n`` held-out pixels) against 1 for
    each agreement term (pixels where the start model was sure; with ``"objects"`` also up to
    ``cfg.anchor_objects`` of its own objects far from the strokes, scored like held-out
    cells, weighted by the square of the start model's own score on all painted cells (with
    ``painted`` as masks: on the held-out cells), so that they count where it was right and not
    where it was wrong): a small held-out set is a noisy judge.
    Those of the start model's objects that a network still finds must keep their outlines: when
    their mean IoU with the start model's outlines falls by more than ``cfg.anchor_drift`` (or,
    when that is more, ``cfg.anchor_drift_per_gain`` times what the network gained over the start
    model on the held-out painting: a network that finds held-out cells the start model missed
    may redraw more), the network scores at most what the start model scored, so it cannot
    replace it (``drifted`` counts the networks that would have replaced it otherwise;
    ``best_capped`` is the best score taken from them). Objects a network no longer finds are
    left to the weighted term above: a fine-tuned model that drops debris the start model took
    for nuclei must not be barred for it. The first network scored must be the start model."""

    def __init__(self, model: SegmentationModel, examples: list[Example], scored_labels, painted,
                 cfg: TrainingConfig):
        self.model, self.examples, self.match_iou = model, examples, cfg.match_iou
        self.unmatched_credit = cfg.unmatched_credit
        self.regions: list[_Region] = []
        self.cells: list[_CellWindow] = []
        self.scribbles: list[_Region] = []  # held-out strokes inside cells, scored by the share found as cell
        n_cls = model.config.n_classes
        for i, lb in enumerate(scored_labels):
            lab = np.asarray(lb)
            if cfg.holdout_score == "objects":
                partial = partly_painted(lab)
                self.cells += _cell_windows(i, np.where(partial, 0, lab))
                if partial.any():
                    self.scribbles += _regions_of(i, np.where(partial, 1, -1))
                if (lab == 1).any():
                    self.regions += _regions_of(i, np.where(lab == 1, 0, -1))
            elif lab.any():
                two = cfg.separate_touching and n_cls == 2
                self.regions += _regions_of(i, to_classes(separate_touching(lab) if two else lab, n_cls,
                                                          cfg.boundary_width_for(model)))
        self.n_scored = sum(int(np.count_nonzero(np.asarray(lb) > 0)) for lb in scored_labels)
        # where nobody painted and the start model was sure, it is the reference: a fine-tuned
        # model must gain more on the held-out strokes than it loses there
        masks = [np.asarray(p) > 0 for p in painted]
        far = [ndi.distance_transform_edt(~m) > max(2 * cfg.distill_distance, 32) if m.any() else np.ones(m.shape, bool)
               for m in masks]
        arng = np.random.default_rng(cfg.seed + 1)
        self.anchors: list[_Region] = []
        for c in range(n_cls):
            self.anchors += _stand_ins(examples, far, c, arng)
        # the start model's own objects far from the strokes, scored as objects ("objects" only)
        self.start_held: float | None = None
        self.start_score: float | None = None
        self.start_anchors: list[float] | None = None  # the start model's IoU on each of its own anchors (about 1)
        self.anchor_drift, self.min_gain = cfg.anchor_drift, cfg.min_gain
        self.drift_per_gain = cfg.anchor_drift_per_gain
        self.start_last_held: float | None = None  # the start model's score on the held-out painting
        self.drifted, self.best_capped = 0, None
        self.last_drift: float | None = None  # the network scored last: its outline drift ("objects")
        self.last_held: float | None = None  # and its score on the held-out painting
        self.object_anchors = (_object_anchors(model, examples, far, arng, cfg.anchor_objects)
                               if cfg.holdout_score == "objects" and cfg.anchor_objects > 0 else [])
        # the start model's reliability is measured on every painted cell (all are new to it),
        # not on the one or two held out: those may be just the ones it missed
        self.painted_cells, self.painted_scribbles = [], []
        if self.object_anchors:
            for i, lb in enumerate(painted):
                lab = np.asarray(lb)
                if lab.dtype == bool:
                    continue
                partial = partly_painted(lab)
                self.painted_cells += _cell_windows(i, np.where(partial, 0, lab))
                if partial.any():
                    self.painted_scribbles += _regions_of(i, np.where(partial, 1, -1))

    def score(self, net, device, bf16: bool) -> float:
        """The score of ``net`` (in eval mode), higher is better, 0 to 1."""
        args = (net, self.model, self.examples)
        first = self.start_score is None  # the first network scored is the start model
        held, anchors = [], None
        if self.cells or self.scribbles:  # the held-out cells: whole ones as objects, scribbles by pixels
            cell_parts = ([_cell_score(*args, self.cells, device, bf16, self.match_iou, self.unmatched_credit)]
                          if self.cells else []) + ([_cell_recall(*args, self.scribbles, device, bf16)]
                                                    if self.scribbles else [])
            held.append(float(np.mean(cell_parts)))
        if self.regions:
            held.append(_region_score(*args, self.regions, device, bf16))
        self.last_held = float(np.mean(held)) if held else None
        parts, weights = [], []
        if held:
            parts.append(self.last_held)
            weights.append(self.n_scored / (self.n_scored + HELD_OUT_PIXELS) if self.anchors else 1.0)
        if self.anchors:
            parts.append(_region_score(*args, self.anchors, device, bf16))
            weights.append(1.0)
        if self.object_anchors:
            if first:
                if self.painted_cells or self.painted_scribbles:  # its score on all painted cells
                    on = ([_cell_score(*args, self.painted_cells, device, bf16, self.match_iou,
                                       self.unmatched_credit)] if self.painted_cells else []) + \
                         ([_cell_recall(*args, self.painted_scribbles, device, bf16)] if self.painted_scribbles else [])
                    self.start_held = float(np.mean(on))
                else:  # on the held-out cells
                    self.start_held = held[0] if (self.cells or self.scribbles) else 1.0
            anchors = _cell_scores(*args, self.object_anchors, device, bf16, self.match_iou, self.unmatched_credit)
            parts.append(float(np.mean(anchors)))
            # the start model's objects count as much as it got the painted cells right
            # (squared): on an image where it was wrong (dim nuclei missed, debris taken for
            # nuclei), its other objects are no reference for what is an object
            weights.append(self.start_held ** 2)
        score = float(np.average(parts, weights=weights)) if parts else 0.0
        if first:
            self.start_score, self.start_anchors, self.start_last_held = score, anchors, self.last_held
        self.last_drift = None if anchors is None else self.outline_drift(anchors)
        if not first and self.last_drift is not None and self.last_drift > self.allowed_drift() \
                and score > self.start_score + self.min_gain:
            # but where it kept an object it must keep its outline: fine-tuning that moves the
            # borders of objects nobody painted (all nuclei a pixel smaller, membranes opened)
            # does so on the user's other images too, whatever it gained on the held-out strokes
            self.drifted += 1
            self.best_capped = score if self.best_capped is None else max(self.best_capped, score)
            score = self.start_score
        return score

    def allowed_drift(self) -> float:
        """How far the outlines of the network scored last may move (:func:`allowed_drift`)."""
        return allowed_drift(self.last_held, self.start_last_held, self.anchor_drift, self.drift_per_gain)

    def outline_drift(self, anchors: list[float]) -> float:
        """How much mean IoU the anchors that both the start model and this network find (IoU
        above ``match_iou``) lost against the start model's; 0 when there are none."""
        both = [(a, s) for a, s in zip(anchors, self.start_anchors) if a > self.match_iou and s > self.match_iou]
        if not both:
            return 0.0
        return float(np.mean([s for _, s in both])) - float(np.mean([a for a, _ in both]))
