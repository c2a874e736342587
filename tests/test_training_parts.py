"""The parts of training on their own: learning-rate schedule, loss smoothing, best-model
tracker, and the held-out check that scores painted cells as objects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import tiny_model

from napari_unet.normalize import Normalization
from napari_unet.train import BestModelTracker, LearningRateSchedule, TrainingConfig, matched_cell_scores
from napari_unet.training.examples import Example
from napari_unet.training.holdout import HeldOutJudge
from napari_unet.training.smoothing import BEST_MODEL_SMOOTHING, CURVE_SMOOTHING, smoothed

# --------------------------------------------------------------------------- learning-rate schedule


def test_cosine_schedule_warms_up_then_decays_to_five_percent():
    s = LearningRateSchedule(1e-3, 200, "cosine")
    assert s.warmup == 20
    warm = [s(i) for i in range(20)]
    assert warm[0] == pytest.approx(1e-3 / 20) and warm[-1] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(warm, warm[1:]))  # rises linearly
    decay = [s(i) for i in range(20, 200)]
    assert decay[0] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # never rises again
    assert s(110) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))  # half-way down the cosine
    assert s(199) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 179 / 180))))
    assert s(200) == pytest.approx(0.05e-3)


def test_short_runs_and_constant_schedule():
    assert LearningRateSchedule(1e-2, 5).warmup == 0 and LearningRateSchedule(1e-2, 5)(0) == pytest.approx(1e-2)
    s = LearningRateSchedule(3e-4, 150, "constant")
    assert {s(i) for i in range(150)} == {3e-4}
    cfg = TrainingConfig(iterations=150, learning_rate=1e-4, lr_schedule="cosine")
    assert LearningRateSchedule.from_config(cfg)(14) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="cosine"):
        LearningRateSchedule(1e-3, 10, "step")


# --------------------------------------------------------------------------- smoothing


def test_one_smoothing_for_best_model_and_curve():
    assert smoothed(None, 3.0, 0.9) == 3.0
    assert smoothed(1.0, 3.0, CURVE_SMOOTHING) == pytest.approx(1.2)
    assert smoothed(1.0, 3.0, BEST_MODEL_SMOOTHING) == pytest.approx(1.1)


# --------------------------------------------------------------------------- best-model tracker


def _net_with(value: float):
    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(value)
    return net


def test_tracker_keeps_start_until_beaten_by_more_than_min_gain_and_later_ties_win(tmp_path):
    from napari_unet.modelfile import load_model

    model = tiny_model()
    model.name = "start"
    ck = tmp_path / "best.safetensors"
    t = BestModelTracker(model, TrainingConfig(iterations=30), checkpoint=ck)
    t.start({"weight": "start"}, 0.5)
    assert not t.consider(0.5, 10, _net_with(1.0)) and t.iteration == 0 and not ck.exists()  # a tie keeps the start
    assert not t.consider(0.4, 10, _net_with(1.0)) and t.state == {"weight": "start"}
    # a gain within the judge's noise (min_gain, 0.02 by default) does not replace the start model
    assert not t.consider(0.504, 10, _net_with(1.0)) and t.iteration == 0 and not ck.exists()
    assert not t.consider(0.519, 10, _net_with(1.0)) and t.iteration == 0 and not ck.exists()
    net = model.network
    assert t.consider(0.6, 20, net, done=19) and t.iteration == 20 and t.score == 0.6
    saved = load_model(ck)
    assert saved.provenance["best_iteration"] == 20 and saved.provenance["finished"] is False
    assert saved.provenance["trained_from"] == "start" and saved.name == "start (training)"
    assert t.consider(0.6, 30, net) and t.iteration == 30  # a later fine-tuned iteration may tie
    assert not t.consider(0.59, 40, net) and t.iteration == 30
    assert t.saved == [ck, ck]


def test_min_gain_zero_lets_any_strict_gain_replace_the_start():
    t = BestModelTracker(tiny_model(), TrainingConfig(min_gain=0.0))
    t.start({"weight": "start"}, 0.5)
    assert not t.consider(0.5, 10, _net_with(1.0)) and t.consider(0.501, 20, _net_with(1.0))
    with pytest.raises(ValueError, match="min_gain"):
        TrainingConfig(min_gain=-0.1)


def test_tracker_without_start_takes_the_first_score_and_keeps_a_copy():
    t = BestModelTracker(tiny_model(), TrainingConfig())
    net = _net_with(2.0)
    assert t.consider(-1.0, 1, net)
    with torch.no_grad():
        net.weight.fill_(5.0)  # training goes on: the kept state must not follow
    assert float(t.state["weight"]) == 2.0 and t.saved == []


# --------------------------------------------------------------------------- held-out cells as objects


def test_matched_cell_scores_see_merges_losses_and_splits():
    cells = np.zeros((10, 20), int)
    cells[2:8, 2:9] = 1
    cells[2:8, 10:17] = 2
    both = np.where(cells > 0, 1, 0)
    both[2:8, 9] = 1  # one object over both cells and the gap
    assert matched_cell_scores(cells, cells) == [1.0, 1.0]
    assert matched_cell_scores(both, cells) == [0.0, 0.0]  # merged: IoU 42/90 each
    lost = np.where(cells == 1, 1, 0)
    assert matched_cell_scores(lost, cells) == [1.0, 0.0]
    split = cells.copy()
    split[2:8, 2:5] = 3  # cell 1 cut in two pieces of 18 and 24 pixels: only the larger counts
    assert matched_cell_scores(split, cells) == [pytest.approx(24 / 42), 1.0]
    split[2:5, 5:9] = 4  # three pieces of 18, 12 and 12 pixels
    assert matched_cell_scores(split, cells)[0] == 0.0  # no piece above IoU 0.5
    grown = np.where(cells > 0, cells, 0)
    grown[1, 2:9] = 1  # a row too many: IoU 42/49
    assert matched_cell_scores(grown, cells)[0] == pytest.approx(42 / 49)
    assert matched_cell_scores(grown, cells, match_iou=0.9)[0] == 0.0
    # partial credit: an unmatched cell counts a fraction of its best IoU, a lost one nothing
    assert matched_cell_scores(both, cells, unmatched_credit=0.5) == [pytest.approx(0.5 * 42 / 90)] * 2
    assert matched_cell_scores(lost, cells, unmatched_credit=0.5) == [1.0, 0.0]
    assert matched_cell_scores(grown, cells, match_iou=0.9, unmatched_credit=0.5)[0] == pytest.approx(0.5 * 42 / 49)


class _Threshold(torch.nn.Module):
    """A stand-in network: cell where the (fixed-normalised) image is above ``t``."""

    def __init__(self, t):
        super().__init__()
        self.t = t

    def forward(self, x):
        z = 20 * (x[:, :1] - self.t)
        return torch.cat([-z, z], dim=1)


@pytest.mark.parametrize("score", ["objects", "pixels"])
def test_a_candidate_that_merges_two_held_out_cells_scores_below_the_start(score):
    # two bright cells separated by a dim line; the start model splits them (threshold 0.7),
    # the candidate merges them (threshold 0.3); the line itself is not painted
    img = np.zeros((64, 64), np.float32)
    img[20:40, 10:30] = 1.0
    img[20:40, 31:51] = 1.0
    img[20:40, 30] = 0.5
    lab = np.zeros((64, 64), np.uint16)
    lab[20:40, 10:30] = 2
    lab[20:40, 31:51] = 3
    lab[5:10, 5:60] = 1  # a held-out background stroke
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    cfg = TrainingConfig(holdout_score=score, tile=124)
    ex = Example(img, np.zeros_like(lab), model, cfg)
    judge = HeldOutJudge(model, [ex], [lab], [lab > 0], cfg)
    start, merged = (judge.score(_Threshold(t), torch.device("cpu"), False) for t in (0.7, 0.3))
    if score == "objects":
        # cells: half their IoU with the merged object (400 / 820), background 1
        assert start == pytest.approx(1.0) and merged == pytest.approx((0.5 * 400 / 820 + 1) / 2, abs=0.02)
    else:  # the pixel score cannot see the merge: the reason for "objects"
        assert start == merged == pytest.approx(1.0)


def test_a_large_held_out_cell_merged_with_an_unpainted_neighbour_counts_zero():
    # EM-sized regions: the window must see enough of the merged neighbour for the IoU to fall
    img = np.zeros((160, 200), np.float32)
    img[20:140, 10:90] = 1.0
    img[20:140, 91:171] = 1.0
    img[20:140, 90] = 0.5
    lab = np.zeros(img.shape, np.uint16)
    lab[20:140, 10:90] = 2  # only the left region is painted (and held out)
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    for credit in (0.0, 0.5):
        cfg = TrainingConfig(tile=124, unmatched_credit=credit)
        judge = HeldOutJudge(model, [Example(img, np.zeros_like(lab), model, cfg)], [lab], [lab > 0], cfg)
        start, merged = (judge.score(_Threshold(t), torch.device("cpu"), False) for t in (0.7, 0.3))
        assert start == pytest.approx(1.0)
        assert merged == 0.0 if credit == 0 else 0 < merged < 0.3  # at most half of IoU < 0.5


def test_a_model_that_starts_to_find_missed_cells_beats_one_that_finds_none():
    # the start model finds nothing (threshold above the image), the candidate finds a piece of
    # each held-out cell (IoU 0.4, below the match threshold): partial credit lets it win
    img = np.zeros((64, 64), np.float32)
    img[20:40, 10:30] = 0.2
    img[20:28, 10:30] = 0.6  # the part a fine-tuned model finds first
    lab = np.zeros((64, 64), np.uint16)
    lab[20:40, 10:30] = 2
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    for credit, wins in ((0.0, False), (0.5, True)):
        cfg = TrainingConfig(holdout_score="objects", tile=124, unmatched_credit=credit)
        judge = HeldOutJudge(model, [Example(img, np.zeros_like(lab), model, cfg)], [lab], [lab > 0], cfg)
        start, found = (judge.score(_Threshold(t), torch.device("cpu"), False) for t in (0.9, 0.4))
        assert (found > start) is wins


def test_scribbles_inside_cells_are_not_scored_as_whole_cells():
    from napari_unet.training.holdout import partly_painted

    lab = np.zeros((80, 80), np.uint16)
    yy, xx = np.mgrid[:80, :80]
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 2  # a whole round cell
    lab[(yy - 20) ** 2 / 4 + (xx - 60) ** 2 <= 64] = 3  # a whole oval one, 2:1
    lab[50:53, 10:40] = 4  # a 3-pixel scribble
    lab[60:70, 50:60] = 5  # a short fat dab: whole
    part = partly_painted(lab)
    assert part[lab == 4].all() and not part[(lab == 2) | (lab == 3) | (lab == 5)].any()
    assert not partly_painted(np.zeros((5, 5), np.uint16)).any()


def test_held_out_scribbles_count_the_share_of_their_pixels_found_as_cell():
    # a cell the start model misses (threshold above it); a candidate finds it. Painted with a
    # scribble only: as an object the scribble matches nothing either way (its outline is not the
    # cell's), by its pixels the candidate finds all of it
    img = np.zeros((64, 64), np.float32)
    img[16:48, 16:48] = 0.5
    lab = np.zeros((64, 64), np.uint16)
    lab[31:34, 20:44] = 2
    lab[2:5, 2:60] = 1
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    cfg = TrainingConfig(holdout_score="objects", tile=124, unmatched_credit=0.5)
    judge = HeldOutJudge(model, [Example(img, np.zeros_like(lab), model, cfg)], [lab], [lab > 0], cfg)
    assert judge.scribbles and not judge.cells
    start, found = (judge.score(_Threshold(t), torch.device("cpu"), False) for t in (0.9, 0.3))
    assert start == pytest.approx(0.5) and found == pytest.approx(1.0)  # (cell part + background 1) / 2


def test_a_candidate_that_grows_the_start_models_unpainted_objects_scores_below_it():
    # discs with soft edges: a lower threshold grows every one of them by a few pixels; only one
    # disc (far from the others) is painted, so the others are judged by the start model's objects
    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160), np.float32)
    centres = [(30, 30), (30, 110), (110, 30), (110, 110), (70, 70)]
    for cy, cx in centres[1:]:
        r = np.hypot(yy - cy, xx - cx)
        img = np.maximum(img, np.clip((14 - r) / 8, 0, 1))
    img[np.hypot(yy - 30, xx - 30) < 10] = 1.0  # the painted one has a hard edge: both find it alike
    lab = np.zeros(img.shape, np.uint16)
    lab[np.hypot(yy - 30, xx - 30) < 10] = 2  # one painted cell
    lab[2:6, 2:20] = 1  # a background stroke
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    cfg = TrainingConfig(holdout_score="objects", tile=124)
    ex = Example(img, np.zeros_like(lab), model, cfg)
    start_net = _Threshold(0.5)
    with torch.no_grad():
        ex.teacher = torch.softmax(start_net(torch.from_numpy(img)[None, None]), 1)[0].numpy()
    gaps = []
    for n in (12, 0):
        cfg = TrainingConfig(holdout_score="objects", tile=124, anchor_objects=n)
        judge = HeldOutJudge(model, [ex], [lab], [lab > 0], cfg)
        assert bool(judge.object_anchors) == (n > 0)  # the unpainted discs are the reference objects
        start = judge.score(start_net, torch.device("cpu"), False)
        grown = judge.score(_Threshold(0.1), torch.device("cpu"), False)
        gaps.append(start - grown)
    # the held-out cell is found alike by both; the grown unpainted objects cost the candidate
    # more with the object anchors than the pixels where the start model was sure alone
    assert gaps[0] > gaps[1] + 0.02 and gaps[0] > 0.05, gaps


def test_a_candidate_that_moves_the_outlines_of_unpainted_objects_cannot_replace_the_start():
    # the start model misses the painted (dim) cell, so its own objects count for nothing as a
    # reference of what is an object; a candidate that finds the dim cell but grows every
    # unpainted disc still must not win: their outlines moved
    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160), np.float32)
    for cy, cx in [(30, 110), (110, 30), (110, 110), (70, 70)]:
        img = np.maximum(img, np.clip((14 - np.hypot(yy - cy, xx - cx)) / 8, 0, 1))
    dim = np.hypot(yy - 30, xx - 30) < 10
    img[dim] = 0.2
    lab = np.zeros(img.shape, np.uint16)
    lab[dim] = 2
    lab[2:6, 2:20] = 1
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    ex = Example(img, np.zeros_like(lab), model, TrainingConfig(tile=124))
    start_net, candidate = _Threshold(0.5), _Threshold(0.15)
    with torch.no_grad():
        ex.teacher = torch.softmax(start_net(torch.from_numpy(img)[None, None]), 1)[0].numpy()
    # the candidate gains 0.5 on the held-out painting (the dim cell found) and moves the discs'
    # outlines by about 0.4 mean IoU
    # with the allowance that grows with the held-out gain: 1.0 x 0.5 lets it move 0.5, 0.5 x 0.5 only 0.25
    for drift, per_gain, wins in ((1.0, 0.0, True), (0.05, 0.0, False), (0.05, 1.0, True), (0.05, 0.5, False)):
        cfg = TrainingConfig(holdout_score="objects", tile=124, anchor_drift=drift, anchor_drift_per_gain=per_gain,
                             min_gain=0.0)  # the outline rule alone
        judge = HeldOutJudge(model, [ex], [lab], [lab > 0], cfg)
        start = judge.score(start_net, torch.device("cpu"), False)
        held_start = judge.last_held
        found = judge.score(candidate, torch.device("cpu"), False)
        assert (found > start) is wins, (drift, per_gain, start, found)
        assert judge.drifted == (0 if wins else 1)
        assert judge.last_held - held_start == pytest.approx(0.5, abs=0.05) and 0.3 < judge.last_drift < 0.45
    with pytest.raises(ValueError, match="anchor_drift"):
        TrainingConfig(anchor_drift=1.5)
    with pytest.raises(ValueError, match="anchor_drift_per_gain"):
        TrainingConfig(anchor_drift_per_gain=-1)


def test_the_start_models_reliability_is_measured_on_every_painted_cell():
    # two painted cells: the held-out one is too dim for the start model, the other it finds;
    # its objects far from the strokes then weigh by its score on both cells, not on the one
    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160), np.float32)
    img[np.hypot(yy - 110, xx - 110) < 12] = 1.0  # an unpainted object of the start model
    img[np.hypot(yy - 30, xx - 30) < 10] = 0.2  # painted, held out, missed
    img[np.hypot(yy - 30, xx - 110) < 10] = 1.0  # painted, trained on, found
    painted = np.zeros(img.shape, np.uint16)
    painted[np.hypot(yy - 30, xx - 30) < 10] = 2
    painted[np.hypot(yy - 30, xx - 110) < 10] = 3
    held = np.where(painted == 2, painted, 0).astype(np.uint16)
    model = tiny_model(padding="same")
    model.normalization = Normalization(mode="fixed")
    cfg = TrainingConfig(holdout_score="objects", tile=124, distill_distance=4)
    ex = Example(img, np.where(painted == 3, painted, 0).astype(np.uint16), model, cfg)
    start_net = _Threshold(0.5)
    with torch.no_grad():
        ex.teacher = torch.softmax(start_net(torch.from_numpy(img)[None, None]), 1)[0].numpy()
    only_held = HeldOutJudge(model, [ex], [held], [painted > 0], cfg)
    every = HeldOutJudge(model, [ex], [held], [painted], cfg)  # the painted labels, not masks
    assert every.object_anchors  # the unpainted object
    for judge in (only_held, every):
        judge.score(start_net, torch.device("cpu"), False)
    assert only_held.start_held == 0.0  # it missed the held-out cell: its objects would count for nothing
    assert every.start_held == pytest.approx(0.5)  # one of two painted cells found exactly


def test_a_large_judge_window_is_computed_in_pieces_with_the_same_result(monkeypatch):
    import napari_unet.training.holdout as H

    model = tiny_model()  # valid padding: every piece reads its own context, the result is exact
    net = model.network.eval()
    img = np.random.default_rng(0).random((1, 150, 170)).astype(np.float32)
    whole = H._window_probabilities(net, model, img, 7, 9, 120, 130, torch.device("cpu"), False)
    monkeypatch.setattr(H, "WINDOW_CHUNK", 48)
    calls, real = [], H._window_probabilities

    def spy(*args):
        calls.append(args[3:7])  # y0, x0, h, w
        return real(*args)

    monkeypatch.setattr(H, "_window_probabilities", spy)
    pieces = H._window_probabilities(net, model, img, 7, 9, 120, 130, torch.device("cpu"), False)
    assert len(calls) == 1 + 3 * 3 and max(max(c[2], c[3]) for c in calls[1:]) <= 48  # nine pieces
    assert pieces.shape == whole.shape == (2, 120, 130)
    np.testing.assert_allclose(pieces, whole, atol=1e-5)
