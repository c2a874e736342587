import threading

import numpy as np
import pytest
from _helpers import blobs as _blobs
from _helpers import tiny_model

from napari_unet.modelfile import load_model
from napari_unet.train import Progress, TrainingConfig, train, weighted_cross_entropy


def blobs(seed=0, n=12, size=96):
    """A synthetic fluorescence-like image with bright disks and its instance labels."""
    return _blobs(shape=(size, size), n=n, seed=seed)


def strokes(inst):
    """Partial annotation: a few cells painted and a background line, the rest unannotated."""
    lab = np.zeros(inst.shape, np.int32)
    ids = [i for i in np.unique(inst) if i][:4]
    for j, i in enumerate(ids):
        lab[inst == i] = j + 2
    lab[2:4, :] = np.where(inst[2:4, :] == 0, 1, 0)
    lab[:, 2:4] = np.where(inst[:, 2:4] == 0, 1, lab[:, 2:4])
    lab[60:62, :] = np.where(inst[60:62, :] == 0, 1, lab[60:62, :])
    return lab


CFG = dict(tile=124, validate_every=10, learning_rate=1e-2, elastic_sigma=4.0)


def test_loss_ignores_unannotated_pixels():
    import torch

    logits = torch.randn(1, 2, 4, 4)
    cls = torch.zeros(1, 4, 4, dtype=torch.long)
    w = torch.zeros(1, 4, 4)
    w[0, 0, 0] = 1
    other = logits.clone()
    other[0, :, 1:, :] = 100 * torch.randn(2, 3, 4)  # change only unannotated pixels
    assert torch.isclose(weighted_cross_entropy(logits, cls, w), weighted_cross_entropy(other, cls, w))


def test_training_from_strokes_lowers_the_loss_and_does_not_touch_input():
    img, inst = blobs()
    lab = strokes(inst)
    lab_before = lab.copy()
    model = tiny_model()
    w_before = model.network.head.weight.detach().clone()
    res = train(model, [img], [lab], TrainingConfig(iterations=40, **CFG))
    first = np.mean([h.loss for h in res.history[:8]])
    last = np.mean([h.loss for h in res.history[-8:]])
    assert last < 0.8 * first
    assert np.array_equal(lab, lab_before)
    assert model.network.head.weight.equal(w_before)  # the input model is not modified
    assert res.model.provenance["iterations"] == 40


def test_same_seed_same_result():
    img, inst = blobs(1)
    lab = strokes(inst)
    a = train(tiny_model(), [img], [lab], TrainingConfig(iterations=5, seed=3, **CFG))
    b = train(tiny_model(), [img], [lab], TrainingConfig(iterations=5, seed=3, **CFG))
    c = train(tiny_model(), [img], [lab], TrainingConfig(iterations=5, seed=4, **CFG))
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert [h.loss for h in a.history] != [h.loss for h in c.history]


def test_cancel_stops_within_one_iteration_and_keeps_best(tmp_path):
    img, inst = blobs(2)
    full = np.where(inst > 0, inst + 1, 1)
    ev = threading.Event()
    seen: list[Progress] = []

    def cb(p):
        seen.append(p)
        if p.iteration == 12:
            ev.set()

    ck = tmp_path / "best.safetensors"
    res = train(tiny_model(), [img], [full], TrainingConfig(iterations=100, **CFG), validation=[(img, full)],
                callback=cb, cancel=ev, checkpoint=ck)
    assert res.cancelled and len(res.history) == 12
    assert res.best_iteration == 10 and seen[9].validation_score is not None
    back = load_model(ck)  # the checkpoint on disk is the best model
    assert back.provenance["best_iteration"] == 10


def test_bad_training_input():
    img, inst = blobs()
    with pytest.raises(ValueError, match="nothing is annotated"):
        train(tiny_model(), [img], [np.zeros_like(inst)], TrainingConfig(iterations=2, **CFG))
    with pytest.raises(ValueError, match="do not match"):
        train(tiny_model(), [img], [np.ones((10, 10), np.int32)], TrainingConfig(iterations=2, **CFG))
    with pytest.raises(ValueError, match="1 images but 2 label images"):
        train(tiny_model(), [img], [inst, inst], TrainingConfig(iterations=2, **CFG))
    with pytest.raises(ValueError, match="optimizer"):
        TrainingConfig(optimizer="lbfgs")


def test_paper_sgd_recipe_runs():
    img, inst = blobs(3)
    res = train(tiny_model(), [img], [strokes(inst)],
                TrainingConfig(iterations=3, optimizer="sgd", momentum=0.99, learning_rate=1e-3, tile=124))
    assert len(res.history) == 3 and all(np.isfinite(h.loss) for h in res.history)


def test_weight_average_keeps_the_moving_average_of_the_weights():
    """With ``weight_average`` the weights checked and kept are the moving average: a decay near
    1 keeps the weights of the first step; 0 keeps the last step's."""
    import torch

    img, inst = blobs(3)
    full = np.where(inst > 0, inst + 1, 1)
    cfg = dict(CFG, seed=5, lr_schedule="constant", validate_every=6, fine_tune=False)

    def weights(res):
        return torch.cat([p.detach().flatten() for p in res.model.network.parameters()])

    one = weights(train(tiny_model(), [img], [full], TrainingConfig(iterations=1, **cfg)))
    six = weights(train(tiny_model(), [img], [full], TrainingConfig(iterations=6, **cfg)))
    held = weights(train(tiny_model(), [img], [full], TrainingConfig(iterations=6, weight_average=1 - 1e-9, **cfg)))
    half = weights(train(tiny_model(), [img], [full], TrainingConfig(iterations=6, weight_average=0.5, **cfg)))
    assert (six - one).abs().max() > 1e-3  # six steps moved the weights
    assert torch.allclose(held, one, atol=1e-6)
    assert (half - six).abs().max() > 1e-4 and (half - one).abs().max() > 1e-4  # in between
    # checks in the middle of the run swap the average in and training goes on from its own weights
    every2 = dict(cfg, validate_every=2)
    plain = train(tiny_model(), [img], [full], TrainingConfig(iterations=6, **every2))
    avg = train(tiny_model(), [img], [full], TrainingConfig(iterations=6, weight_average=0.5, **every2))
    assert [p.loss for p in avg.history] == [p.loss for p in plain.history]
    with pytest.raises(ValueError, match="weight_average"):
        TrainingConfig(weight_average=1.0)
