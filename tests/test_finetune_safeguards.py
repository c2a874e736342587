"""Fine-tuning from a few strokes never breaks the model: distillation, hold-out, warnings, card."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _helpers import tiny_model
from test_train import blobs

from napari_unet.train import (
    TrainingConfig,
    check_annotations,
    distillation_weight,
    holdout_split,
    train,
)

FAST = dict(tile=124, elastic_sigma=4.0, validate_every=10)


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained from scratch on fully labelled synthetic blobs (a 'start model')."""
    pairs = [blobs(s, n=14) for s in (10, 11, 12)]
    res = train(tiny_model(), [p[0] for p in pairs], [p[1] + 1 for p in pairs],
                TrainingConfig(iterations=120, learning_rate=1e-2, seed=0, **FAST))
    model = res.model
    model.name = "blobs"
    assert model.provenance["trained_from"] == "tiny"  # so fine-tuning it turns the safeguards on
    return model


def fg_fraction(model, img, mask):
    from napari_unet import predict_probabilities

    p = predict_probabilities(img, model, device="cpu", precision="float32")[model.foreground_class]
    return float(np.mean(p[mask] > 0.5))


def cells_only(inst, n=4):
    lab = np.zeros(inst.shape, np.int32)
    for j, i in enumerate([i for i in np.unique(inst) if i][:n]):
        lab[inst == i] = j + 2
    return lab


# --------------------------------------------------------------------------- warnings


def test_check_annotations_says_what_to_paint():
    z = np.zeros((20, 20), np.int32)
    assert "Nothing is painted" in " ".join(check_annotations([z]))
    assert "Nothing is painted" in " ".join(check_annotations([]))
    only_bg = z.copy()
    only_bg[:5] = 1
    (msg,) = check_annotations([only_bg])
    assert "Only background" in msg and "cells too" in msg
    cells = z.copy()
    cells[2:5, 2:5], cells[10:14, 10:14] = 2, 3
    (msg,) = check_annotations([cells])
    assert "No background" in msg and "label 1" in msg
    little = cells.copy()
    little[0, 0] = 1
    (msg,) = check_annotations([little])
    assert "Very little background" in msg and "1 pixels" in msg
    one = z.copy()
    one[2:6, 2:6], one[10:, :] = 2, 1
    (msg,) = check_annotations([one])
    assert "Only one cell" in msg
    good = cells.copy()
    good[15:, :] = 1
    assert check_annotations([good]) == []
    # cells are counted per image: label 2 in two images is two cells
    assert check_annotations([one, one]) == []


def test_train_reports_the_warnings(trained):
    img, inst = blobs(20, n=14)
    lab = cells_only(inst)
    with pytest.warns(UserWarning, match="No background"):
        res = train(trained, [img], [lab], TrainingConfig(iterations=2, **FAST))
    assert any("No background" in w for w in res.warnings)


# --------------------------------------------------------------------------- hold-out rule, distillation weight


def test_holdout_split_by_whole_objects():
    lab = np.zeros((60, 200), np.int32)
    for k in range(10):  # ten cells
        lab[5:15, 20 * k + 2 : 20 * k + 12] = k + 2
    for k in range(5):  # five background strokes
        lab[40:44, 40 * k : 40 * k + 30] = 1
    tr, held = holdout_split([lab], 0.2, seed=0)
    held_cells = np.unique(held[0][held[0] >= 2])
    assert held_cells.size == 2
    from scipy import ndimage as ndi

    assert ndi.label(held[0] == 1)[1] == 1  # one of five strokes
    assert np.array_equal(np.where(held[0] > 0, held[0], tr[0]), lab)  # a partition of the painting
    assert not np.any((held[0] > 0) & (tr[0] > 0))
    # fewer than four of a kind: none of that kind is held out
    few = np.where(lab >= 5, 0, lab)  # three cells
    tr, held = holdout_split([few], 0.2, seed=0)
    assert not np.any(held[0] >= 2) and np.any(held[0] == 1)


def test_distillation_weight_grows_away_from_strokes_and_with_confidence():
    painted = np.zeros((50, 50), bool)
    painted[25, 25] = True
    probs = np.stack([np.full((50, 50), 0.5), np.full((50, 50), 0.5)])
    probs[0, :, 40:], probs[1, :, 40:] = 0.0, 1.0
    w = distillation_weight(painted, probs, distance=10, confidence=False)
    assert w[25, 25] == 0 and w[25, 27] < w[25, 35] < w[25, 49] <= 1
    w = distillation_weight(painted, probs, distance=10, confidence=True)
    assert w[0, 0] == 0  # the start model did not know: no say
    assert w[0, 49] > 0.9


# --------------------------------------------------------------------------- the safeguards at work


def test_cells_only_strokes_do_not_turn_the_background_into_cells(trained):
    img, inst = blobs(21, n=14)
    lab = cells_only(inst)
    bg = inst == 0
    start = fg_fraction(trained, img, bg)
    assert start < 0.05
    cfg = dict(iterations=60, learning_rate=3e-3, seed=0, **FAST)
    with pytest.warns(UserWarning):
        naive = train(trained, [img], [lab], TrainingConfig(fine_tune=False, stratify=False, **cfg))
        safe = train(trained, [img], [lab], TrainingConfig(fine_tune=True, **cfg))
    # without the safeguards the cells-only painting floods the background (the failure of issue 8)
    flooded = fg_fraction(naive.model, img, bg)
    assert flooded > start + 0.2
    # with them at most a rim around the cells changes (at 30x the stroke default learning rate)
    kept = fg_fraction(safe.model, img, bg)
    assert kept < start + 0.05 and kept - start < (flooded - start) / 5
    assert fg_fraction(safe.model, img, inst > 0) > 0.8


def test_a_run_that_cannot_beat_the_start_model_returns_it(trained, tmp_path):
    img, inst = blobs(22, n=14)
    full = inst + 1
    wrong = np.where(inst > 0, 1, 2).astype(np.int32)  # cells painted as background and the reverse
    ck = tmp_path / "out.safetensors"
    with pytest.warns(UserWarning, match="did not beat the start model"):
        res = train(trained, [img], [wrong], TrainingConfig(iterations=20, learning_rate=1e-2, **FAST),
                    validation=[(img, full)], checkpoint=ck)
    assert res.kept_start and res.best_iteration == 0 and res.scored_on == "validation"
    assert res.best_score == res.start_score
    for k, v in trained.network.state_dict().items():
        assert torch.equal(v, res.model.network.state_dict()[k])
    assert res.model.description == trained.description and res.model.name == trained.name
    from napari_unet.modelfile import load_model

    assert load_model(ck).provenance.get("fine_tuned") is None  # the start model, card unchanged


def test_held_out_strokes_judge_the_iterations():
    start = tiny_model()  # an untrained network whose card says it was trained: one to beat
    start.name, start.provenance = "blobs", {"training_data": "none"}
    img, inst = blobs(23, n=16)
    lab = cells_only(inst, n=8)
    lab[:3, :] = np.where(inst[:3, :] == 0, 1, lab[:3, :])
    for k in range(6):  # six background dabs
        lab[np.hypot(*np.mgrid[:96, :96] - np.array([10 + 15 * k, 90])[:, None, None]) < 3] = 1
    lab = np.where((inst > 0) & (lab == 1), 0, lab)
    res = train(start, [img], [lab], TrainingConfig(iterations=120, learning_rate=1e-2, distillation=0, **FAST),
                image_names=["blobs.tif"])
    assert res.scored_on == "held-out strokes" and res.start_score is not None
    scores = [p.validation_score for p in res.history if p.validation_score is not None]
    assert len(scores) == 12 and not res.kept_start
    assert res.best_score == max(scores) > res.start_score
    assert res.history[res.best_iteration - 1].validation_score == res.best_score
    card = res.model.provenance
    assert card["fine_tuned"] and card["start_model"]["name"] == "blobs"
    assert card["images"] == ["blobs.tif"] and card["painted_pixels"] == int(np.count_nonzero(lab))
    assert card["painted_objects"] == {"cells": 8, "background_strokes": 7}
    assert card["held_out_objects"] == {"cells": 3, "background_strokes": 3}  # 40 % of 8 and of 7, rounded
    assert res.held_out == card["held_out_objects"]
    assert res.check_words() == (f"Score on the 3 painted cells and 3 background strokes held out from training: "
                                 f"start model {res.start_score:.2f}, kept model {res.best_score:.2f}.")
    assert card["start_score"] == res.start_score and card["iterations"] == 120 and card["date"]
    assert "fine-tuned" in res.model.description and "blobs.tif" in res.model.description


def test_new_network_trains_without_the_safeguards():
    img, inst = blobs(24)
    res = train(tiny_model(), [img], [inst + 1], TrainingConfig(iterations=3, **FAST))
    assert res.start_score is None and not res.kept_start and res.scored_on == "training loss"
    assert res.held_out is None and res.check_words() == ""
    assert "fine_tuned" not in res.model.provenance


def test_cli_prints_the_warnings_and_the_outcome(trained, tmp_path, capsys):
    import tifffile

    from napari_unet.cli import main
    from napari_unet.modelfile import load_model, save_model

    img, inst = blobs(25, n=14)
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "strokes.tif", cells_only(inst).astype(np.uint16))
    save_model(trained, tmp_path / "start.safetensors")
    out = tmp_path / "ft.safetensors"
    rc = main(["train", "--images", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "strokes.tif"),
               "--model", str(tmp_path / "start.safetensors"), "--output", str(out), "--iterations", "4",
               "--tile", "124", "--validate-every", "2", "-q"])
    err = capsys.readouterr()
    assert rc == 0 and "warning: No background is painted" in err.err
    assert "start model" in err.out and out.exists()
    assert re.search(r"; held out: [1-9]\d* cells?, 0 background strokes\)", err.out)  # cells only were painted
    card = load_model(out).provenance
    if "kept the start model" in err.out:
        assert card["trained_from"] == "tiny" and "fine_tuned" not in card
    else:
        assert card["images"] == ["img.tif"] and card["start_model"]["name"] == "blobs"


def test_the_panel_offers_the_stroke_defaults():
    from napari_unet._widgets import finetune as W
    from napari_unet.train import STROKE_DEFAULTS

    assert W.STROKE_ITERATIONS == STROKE_DEFAULTS["iterations"]
    assert W.STROKE_LEARNING_RATE == STROKE_DEFAULTS["learning_rate"]
    assert W.STROKE_LEARNING_RATE in [v for _, v in W.RATES]


# --------------------------------------------------------------------------- mixing with the start


def test_mix_weights_interpolates_floats_and_keeps_counters():
    from napari_unet.training.mixing import mix_weights

    start = {"w": torch.zeros(3), "b": torch.ones(2, dtype=torch.bfloat16), "n": torch.tensor(1)}
    tuned = {"w": torch.tensor([2.0, -4.0, 6.0]), "b": torch.full((2,), 3.0, dtype=torch.bfloat16),
             "n": torch.tensor(7)}
    half = mix_weights(start, tuned, 0.5)
    assert torch.equal(half["w"], torch.tensor([1.0, -2.0, 3.0])) and half["b"].dtype == torch.bfloat16
    assert torch.equal(half["b"], torch.full((2,), 2.0, dtype=torch.bfloat16)) and int(half["n"]) == 7
    assert all(torch.equal(mix_weights(start, tuned, 1.0)[k], tuned[k]) for k in tuned)
    with pytest.raises(ValueError, match="same network"):
        mix_weights({"w": start["w"]}, tuned, 0.5)
    with pytest.raises(ValueError, match="mix_with_start"):
        TrainingConfig(mix_with_start=0)


def test_average_weights_is_the_mean_of_the_floats_and_refuses_other_networks():
    from napari_unet.training.mixing import average_weights

    states = [{"w": torch.tensor([0.0, 3.0]), "n": torch.tensor(k)} for k in (1, 2, 3)]
    states[1]["w"], states[2]["w"] = torch.tensor([3.0, 6.0]), torch.tensor([6.0, 0.0])
    avg = average_weights(states)
    assert torch.equal(avg["w"], torch.tensor([3.0, 3.0])) and int(avg["n"]) == 1
    with pytest.raises(ValueError, match="same network"):
        average_weights([states[0], {"w": torch.zeros(3), "n": torch.tensor(1)}])
    with pytest.raises(ValueError, match="no weights"):
        average_weights([])


def test_mix_with_start_checks_and_keeps_the_weights_part_of_the_way_from_the_start(trained, monkeypatch):
    """With ``mix_with_start`` the judge scores, and the run returns, start + share x (fine-tuned -
    start); training itself goes on from the fine-tuned weights (same losses as without)."""
    from napari_unet.training import loop

    seen = []

    def rising(run):  # every check better than the last; records the weights it scored
        seen.append({k: v.detach().float().clone() for k, v in run.net.state_dict().items()})
        return float(len(seen))

    monkeypatch.setattr(loop.Run, "evaluate", rising)
    img, inst = blobs(25, n=14)
    cfg = dict(FAST, iterations=10, learning_rate=1e-2, seed=3, lr_schedule="constant")
    plain = train(trained, [img], [cells_only(inst, n=8)], TrainingConfig(mix_with_start=1.0, **cfg))
    n_plain = len(seen)
    mixed = train(trained, [img], [cells_only(inst, n=8)], TrainingConfig(mix_with_start=0.25, **cfg))
    assert not plain.kept_start and mixed.best_iteration == plain.best_iteration == 10
    assert [p.loss for p in mixed.history] == [p.loss for p in plain.history]
    start = trained.network.state_dict()
    tuned, kept = plain.model.network.state_dict(), mixed.model.network.state_dict()
    moved = max(float((tuned[k].float() - start[k].float()).abs().max()) for k in start)
    assert moved > 1e-3
    for k in start:
        want = start[k].float() + 0.25 * (tuned[k].float() - start[k].float())
        assert torch.allclose(kept[k].float(), want, atol=1e-5 + 1e-3 * moved), k
        assert torch.allclose(seen[-1][k], kept[k].float(), atol=1e-6)  # what was scored is what is kept
    assert len(seen) == n_plain * 2 and mixed.model.provenance["training"]["mix_with_start"] == 0.25
    assert mixed.model.provenance["mixed_with_start"] == 0.25 and plain.model.provenance["mixed_with_start"] == 1
    assert "0.25 of the way from the start model" in mixed.model.description
    assert "of the way" not in plain.model.description


def test_mix_with_start_is_off_when_training_a_new_network():
    img, inst = blobs(24)
    cfg = dict(FAST, iterations=3, seed=1)
    a = train(tiny_model(), [img], [inst + 1], TrainingConfig(**cfg))
    b = train(tiny_model(), [img], [inst + 1], TrainingConfig(mix_with_start=0.5, **cfg))
    for k, v in a.model.network.state_dict().items():
        assert torch.equal(v, b.model.network.state_dict()[k])
