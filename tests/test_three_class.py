"""Three-class output (background / cell interior / cell boundary), the microscope and scale
augmentations, and test-time augmentation."""

import numpy as np
import pytest
import torch
from _helpers import tiny_model

from napari_unet.augment import microscope, rescale
from napari_unet.labels import boundary_mask, to_classes
from napari_unet.model import UNetConfig
from napari_unet.modelfile import SegmentationModel
from napari_unet.postprocess import foreground_of, labels_from_classes
from napari_unet.predict import foreground_probability, predict_probabilities, segment
from napari_unet.train import TrainingConfig, _Example, _sample, train
from napari_unet.weightmap import class_weights


def _touching_pair():
    """Two painted cells touching along a vertical line, background below them, the rest
    (top rows and right columns) not annotated."""
    lab = np.zeros((12, 14), np.uint16)
    lab[2:10, 1:6] = 2
    lab[2:10, 6:11] = 3
    lab[10:12, :] = 1
    return lab


def test_boundary_between_touching_cells_and_background_only():
    lab = _touching_pair()
    b = boundary_mask(lab)
    # both sides of the line where the two cells touch
    assert b[3:9, 5].all() and b[3:9, 6].all()
    # the row next to the painted background
    assert b[9, 1:11].all()
    # next to unannotated pixels (row 1 above, column 11 right of the cells, column 0 left):
    # unknown, so not boundary
    assert not b[2, 2:4].any() and not b[4:8, 10].any() and not b[4:8, 1].any()
    # never outside cells
    assert not b[lab < 2].any()


def test_to_classes_three_classes_and_width():
    lab = _touching_pair()
    c = to_classes(lab, 3)
    assert set(np.unique(c)) == {-1, 0, 1, 2}
    assert (c[lab == 0] == -1).all() and (c[lab == 1] == 0).all()
    old = to_classes(lab, 3, unknown_rims=False)
    assert (old[(lab >= 2) & ~boundary_mask(lab)] == 1).all()
    # the rims next to unannotated pixels are not known to be interior: not trained
    rim = (lab >= 2) & ~boundary_mask(lab) & (c == -1)
    assert rim[2, 1:5].all() and rim[2, 7:11].all() and rim[3:9, 10].all() and rim[3:9, 1].all()
    assert (c[(lab >= 2) & ~boundary_mask(lab) & ~rim] == 1).all() and (c[3:9, 2:5] == 1).all()
    wide = to_classes(lab, 3, boundary_width=2)
    assert (wide == 2).sum() > (c == 2).sum()
    assert (wide[4:8, 4] == 2).all() and (wide[4:8, 7] == 2).all()
    np.testing.assert_array_equal(to_classes(lab, 2)[lab >= 2], 1)
    with pytest.raises(ValueError):
        to_classes(lab, 4)


def test_unknown_rims_only_next_to_unannotated_pixels_inside_the_image():
    lab = np.ones((20, 20), np.uint16)
    lab[0:8, 0:8] = 2  # a cell in the corner: two sides on the image border, two on background
    lab[10:16, 10:16] = 3
    lab[10:16, 16:20] = 0  # the second cell's right side runs into unpainted pixels
    c = to_classes(lab, 3)
    # the image border is not unpainted: the corner cell has no unknown pixel
    assert (c[0:8, 0:8] >= 1).all() and (c[0, 0:7] == 1).all() and (c[0:7, 7] == 2).all()
    # the second cell: boundary towards the background, unknown on its rim next to the unpainted pixels
    assert (c[10, 10:15] == 2).all() and (c[11:15, 15] == -1).all() and (c[11:15, 11:15] == 1).all()
    wide = to_classes(lab, 3, boundary_width=2)
    assert (wide[12:14, 14:16] == -1).all() and (wide[12:14, 12:14] == 1).all()
    # two classes: unchanged, every cell pixel is cell
    assert (to_classes(lab, 2)[lab >= 2] == 1).all()


def test_interior_as_cell_loss_teaches_cell_and_leaves_the_split_alone():
    from napari_unet.training.losses import weighted_cross_entropy

    # one interior-labelled pixel the network calls boundary, one background pixel it calls background
    logits = torch.tensor([[[[-4.0, 4.0]], [[-4.0, -4.0]], [[4.0, -4.0]]]])  # (1, 3, 1, 2)
    classes = torch.tensor([[[1, 0]]])
    w = torch.ones(1, 1, 2)
    plain = weighted_cross_entropy(logits, classes, w)
    as_cell = weighted_cross_entropy(logits, classes, w, interior_as_cell=True)
    assert plain > 3.5 and as_cell < 0.01  # boundary is a cell: no loss
    # a pixel the network calls background still costs as much as before
    logits_bg = torch.tensor([[[[4.0]], [[-4.0]], [[-4.0]]]])
    one = torch.tensor([[[1]]])
    assert weighted_cross_entropy(logits_bg, one, torch.ones(1, 1, 1), interior_as_cell=True) > 7.0
    # two classes: the flag changes nothing
    two = logits[:, :2]
    assert torch.allclose(weighted_cross_entropy(two, classes, w), weighted_cross_entropy(two, classes, w, True))


def test_three_class_fine_tuning_takes_the_split_from_the_start_model():
    from napari_unet.training.distillation import distillation_weight
    from napari_unet.training.loop import Run

    torch.manual_seed(0)
    model = SegmentationModel.new(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3),
                                  class_names=["background", "interior", "boundary"])
    img = np.zeros((96, 96), np.float32)
    lab = np.zeros((96, 96), np.uint16)
    for k, (y, x) in enumerate([(10, 10), (10, 50), (50, 10), (50, 50), (70, 70)]):
        lab[y : y + 14, x : x + 14] = k + 2
        img[y : y + 14, x : x + 14] = 1
    lab[30:34, :] = 1
    lab[:, 88:92] = 1
    lab[88:, 0:30] = 1
    lab[0:6, 30:40] = 1
    for fine_tune, expect in ((True, True), (False, False)):
        cfg = TrainingConfig.for_strokes(fine_tune=fine_tune, precision="float32")
        run = Run(model, [img], [lab], cfg, None, None, None, None)
        assert run.split_from_start is expect
    assert not Run(model, [img], [lab], TrainingConfig.for_strokes(split_from_start=False, precision="float32"),
                   None, None, None, None).split_from_start
    # unknown rims are distilled from the start model at its confidence
    run = Run(model, [img], [lab], TrainingConfig.for_strokes(precision="float32"), None, None, None, None)
    ex = run.examples[0]
    unknown = (ex.labels > 0) & (ex.classes < 0)
    assert unknown.any()
    conf = (ex.teacher.max(axis=0) - 1 / 3) / (2 / 3)
    np.testing.assert_allclose(ex.distill[unknown], np.clip(conf, 0, 1)[unknown], rtol=1e-5)
    assert (ex.distill[(ex.labels > 0) & ~unknown] == 0).all()
    w = distillation_weight(lab > 0, None, 8.0, confidence=False, unknown=unknown)
    assert (w[unknown] == 1).all() and (w[(lab > 0) & ~unknown] == 0).all()


def test_three_class_balance_gives_each_class_equal_total_weight():
    lab = _touching_pair()
    w = class_weights(lab, n_classes=3)
    c = to_classes(lab, 3)
    totals = [w[c == k].sum() for k in range(3)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)
    assert (w[lab == 0] == 0).all()


def test_labels_grow_from_interiors_over_the_boundary():
    # two touching discs: interior cores apart, a boundary line between them
    yy, xx = np.mgrid[0:40, 0:60]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 < 12**2
    b = (yy - 20) ** 2 + (xx - 41) ** 2 < 12**2
    inst = np.where(a, 1, 0) + np.where(b & ~a, 2, 0)
    from napari_unet.labels import from_instances

    cls = to_classes(from_instances(inst), 3)
    probs = np.stack([(cls == k).astype(np.float32) for k in range(3)])
    lab = labels_from_classes(probs)
    assert lab.max() == 2
    # each cell is recovered, boundary included (the split line may sit a pixel either way)
    ids = []
    for i in (1, 2):
        vals, counts = np.unique(lab[inst == i], return_counts=True)
        ids.append(vals[np.argmax(counts)])
        assert ids[-1] > 0 and counts.max() / counts.sum() > 0.97
    assert ids[0] != ids[1]
    assert (lab[inst == 0] == 0).all()
    # the same probabilities as a two-class foreground merge the two cells
    two = np.stack([probs[0], probs[1] + probs[2]])
    assert labels_from_classes(two).max() == 1
    np.testing.assert_allclose(foreground_of(probs), probs[1] + probs[2])


def test_three_class_model_trains_and_segments():
    torch.manual_seed(0)
    model = SegmentationModel.new(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3),
                                  class_names=["background", "interior", "boundary"])
    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.1, (96, 96)).astype(np.float32)
    lab = np.ones((96, 96), np.uint16)
    for k, (y, x) in enumerate([(30, 30), (30, 52), (70, 60)]):
        disc = (np.mgrid[0:96, 0:96][0] - y) ** 2 + (np.mgrid[0:96, 0:96][1] - x) ** 2 < 11**2
        img[disc] += 1
        lab[disc & (lab == 1)] = k + 2
    res = train(model, [img], [lab], TrainingConfig(iterations=6, tile=92, validate_every=3, precision="float32"))
    assert all(np.isfinite(p.loss) for p in res.history)
    seg = segment(img, res.model, precision="float32")
    assert seg.probabilities.shape == (3, 96, 96)
    fg = foreground_probability(seg.probabilities, res.model)
    np.testing.assert_allclose(fg, 1 - seg.probabilities[0], atol=1e-5)


def test_fine_tuning_teaches_the_boundary_width_the_model_was_trained_with():
    from napari_unet.training.examples import Example

    torch.manual_seed(0)
    model = SegmentationModel.new(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3),
                                  class_names=["background", "interior", "boundary"])
    img, lab = np.zeros((64, 64), np.float32), np.ones((64, 64), np.uint16)
    lab[20:40, 20:40] = 2
    lab[20:40, 40:50] = 3
    img[lab >= 2] = 1
    res = train(model, [img], [lab], TrainingConfig(iterations=2, tile=92, validate_every=2, precision="float32",
                                                    boundary_width=2, fine_tune=False))
    assert res.model.provenance["training"]["boundary_width"] == 2
    # fine-tuning it later, with the default settings, makes targets of the same width
    cfg = TrainingConfig.for_strokes()
    assert cfg.boundary_width is None and cfg.boundary_width_for(res.model) == 2
    ex = Example(img, lab, res.model, cfg)
    np.testing.assert_array_equal(ex.classes, to_classes(lab, 3, boundary_width=2))
    assert TrainingConfig(boundary_width=1).boundary_width_for(res.model) == 1  # unless told otherwise
    assert cfg.boundary_width_for(model) == 1  # a new network: the default
    # trained on with the width left open: the card records the width it used, the model's own
    more = train(res.model, [img], [lab], TrainingConfig(iterations=2, tile=92, validate_every=2,
                                                         precision="float32", fine_tune=False))
    assert more.model.provenance["training"]["boundary_width"] == 2
    with pytest.raises(ValueError, match="boundary_width"):
        TrainingConfig(boundary_width=0)


def test_training_tiles_carry_the_boundary_class_through_augmentation():
    model = SegmentationModel.new(UNetConfig(base_channels=4, depth=3, dropout=0.0, n_classes=3),
                                  class_names=["background", "interior", "boundary"])
    lab = np.ones((120, 120), np.uint16)
    lab[30:90, 30:60] = 2
    lab[30:90, 60:90] = 3
    img = (lab >= 2).astype(np.float32)
    cfg = TrainingConfig(max_zoom=2.0, microscope=1.0, tile=92)
    ex = _Example(img, lab, model, cfg)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(6):
        cy, cx = divmod(int(rng.choice(ex.annotated)), 120)
        x, cls, w, _, _ = _sample(ex, cy, cx, 92, 60, rng, cfg)
        assert x.shape == (1, 92, 92) and cls.shape == w.shape == (60, 60)
        assert np.isfinite(x).all()
        seen |= set(np.unique(cls[w > 0]).tolist())
    assert seen == {0, 1, 2}


def test_microscope_augmentation():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 64, 64), np.float32)
    img[0, 20:30, 20:30] = 1
    out = microscope(img, np.random.default_rng(5))
    again = microscope(img, np.random.default_rng(5))
    np.testing.assert_array_equal(out, again)
    assert out.shape == img.shape and out.dtype == np.float32 and np.isfinite(out).all()
    # renormalised like inference normalises: 1st and 99.8th percentiles at 0 and 1
    lo, hi = np.percentile(out, (1, 99.8))
    assert abs(lo) < 1e-4 and abs(hi - 1) < 1e-4
    # debris on background pixels only (given as a mask) lifts the background
    bg = np.ones((64, 64), bool)
    bg[15:35, 15:35] = False
    plain = microscope(img, np.random.default_rng(1), debris=0, uneven=0, object_brightness=0, gamma=0, noise=0,
                       blur=0, contrast_range=(1, 1), percentiles=None)
    np.testing.assert_allclose(plain, img, atol=1e-6)
    blobs = microscope(img, np.random.default_rng(1), background=bg, debris=5, uneven=0, object_brightness=0,
                       gamma=0, noise=0, blur=0, contrast_range=(0.05, 0.05), percentiles=None)
    assert blobs[0][bg].max() > blobs[0][20:30, 20:30].max()
    assert rng is not None


def test_degraded_images_never_wrap_around():
    """augment.degraded (the benchmarks' poorer microscope) stays in range: noise below the dark
    level is clipped to 0 instead of wrapping to the top of uint16 (which would make the 99.8th
    percentile a few salt pixels and everything else black)."""
    from napari_unet.augment import degraded

    img = np.zeros((96, 96), np.float32)
    img[30:60, 30:60] = 200
    bg = img == 0
    for seed in range(6):
        out = degraded(img, bg, seed)
        assert out.dtype == np.uint16 and out.max() < 40000
        # the nucleus is dimmed to a few percent of the clean range, still above the background nearby
        assert out[40:50, 40:50].mean() > np.median(out[bg])
    assert not np.array_equal(degraded(img, bg, 0), degraded(img, bg, 1))


def test_unseen_microscope_puts_nucleus_sized_debris_on_background_and_blurs():
    """augment.unseen_microscope (the benchmarks' microscope outside the training augmentation):
    uint16, reproducible, debris only on background pixels, defocused, one seed per field."""
    from scipy import ndimage as ndi

    from napari_unet.augment import unseen_microscope

    img = np.zeros((128, 128), np.float32)
    img[40:80, 40:80] = 200
    bg = np.zeros(img.shape, bool)
    bg[:, 100:] = True  # debris may only land here
    out = unseen_microscope(img, bg, 0, debris=6, photons=2000)
    assert out.dtype == np.uint16 and out.shape == img.shape
    np.testing.assert_array_equal(out, unseen_microscope(img, bg, 0, debris=6, photons=2000))
    assert not np.array_equal(out, unseen_microscope(img, bg, 1, debris=6, photons=2000))
    plain = unseen_microscope(img, bg, 0, debris=0, photons=2000).astype(float)
    nucleus = plain[50:70, 50:70].mean() - plain[5:20, 5:20].mean()
    extra = ndi.uniform_filter(out.astype(float) - plain, 9)  # the noise averaged out
    assert extra[:, 104:].max() > 0.5 * nucleus  # debris, as bright as a nucleus or more
    assert np.abs(extra[10:-10, 10:50]).max() < 0.1 * nucleus  # and nothing far from the background strip
    assert unseen_microscope(img * 1e4, bg, 0, photons=1e6).max() == 65535  # saturates, never wraps
    # defocused: the nucleus' edge is a ramp several pixels wide, not a step
    row = ndi.uniform_filter1d(plain[55:65].mean(axis=0), 3)[30:50]
    assert np.count_nonzero((row > row.min() + 0.1 * np.ptp(row)) & (row < row.max() - 0.1 * np.ptp(row))) >= 3


def test_images_degraded_by_one_instrument_share_its_background_and_contrast():
    """degraded(instrument_seed=N): images of one microscope share its uneven background and
    contrast (their noise and debris are their own); without it each image has its own."""
    from scipy import ndimage as ndi

    from napari_unet.augment import degraded

    img = np.zeros((128, 128), np.float32)
    img[40:80, 40:80] = 200
    bg = img == 0

    far = ndi.binary_erosion(bg, iterations=20)  # background away from the (per-image dimmed) nucleus

    def smooth(seed, inst):  # the slowly varying part of the background
        return ndi.uniform_filter(degraded(img, bg, seed, debris=0, instrument_seed=inst).astype(np.float32), 9)[far]

    same = np.abs(smooth(1, 5) - smooth(2, 5)).max()
    other = np.abs(smooth(1, 5) - smooth(2, 6)).max()
    own = np.abs(smooth(1, None) - smooth(2, None)).max()
    assert same < 0.1 * other and same < 0.1 * own, (same, other, own)


def test_rescale_image_and_nearest_labels():
    img = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    lab = np.repeat(np.arange(8)[None], 8, 0).astype(np.int8)
    big, lab2 = rescale(img, lab, size=16)
    assert big.shape == (1, 16, 16) and lab2.shape == (16, 16) and lab2.dtype == np.int8
    np.testing.assert_array_equal(lab2[0], np.repeat(np.arange(8), 2))
    small, lab3 = rescale(img, lab, size=4)
    np.testing.assert_array_equal(lab3[0], [1, 3, 5, 7])  # nearest to each output pixel centre


def _equivariant_model():
    """A U-Net without pooling (depth 1) whose 3x3 kernels are symmetric under the 8
    rotations/flips: equivariant to them by construction."""
    torch.manual_seed(0)
    model = tiny_model(depth=1)
    with torch.no_grad():
        for p in model.network.parameters():
            if p.ndim == 4 and p.shape[-1] == 3:
                v = [torch.rot90(p, k, (2, 3)) for k in range(4)]
                v += [torch.flip(x, (3,)) for x in v]
                p.copy_(sum(v) / 8)
    return model


def test_tta_of_an_equivariant_network_equals_its_plain_output():
    model = _equivariant_model()
    img = np.random.default_rng(3).random((37, 53)).astype(np.float32)
    plain = predict_probabilities(img, model, precision="float32", tile=40, scales=[1])
    avg = predict_probabilities(img, model, precision="float32", tile=40, tta=True, scales=[1])
    np.testing.assert_allclose(avg, plain, atol=1e-5)


def test_tta_averages_eight_views_and_counts_progress():
    model = tiny_model(depth=1)  # not symmetric: the views differ
    img = np.random.default_rng(4).random((30, 44)).astype(np.float32)
    plain = predict_probabilities(img, model, precision="float32", scales=[1])
    seen = []
    avg = predict_probabilities(img, model, precision="float32", tta=True, scales=[1], progress=lambda d, t: seen.append((d, t)))
    assert not np.allclose(avg, plain, atol=1e-4)
    np.testing.assert_allclose(avg.sum(0), 1, atol=1e-5)
    assert seen[-1][0] == seen[-1][1] >= 8  # every tile of every view counted, to the end
    # by hand: the mean of the 8 views, each mapped back
    views = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(img, k)
            v = v[:, ::-1] if flip else v
            p = predict_probabilities(np.ascontiguousarray(v), model, precision="float32", scales=[1])
            p = p[..., ::-1] if flip else p
            views.append(np.rot90(p, -k, axes=(-2, -1)))
    np.testing.assert_allclose(avg, np.mean(views, 0), atol=1e-5)


def test_tile_workers_train_like_the_loop():
    model = tiny_model()
    rng = np.random.default_rng(0)
    img = rng.random((80, 80)).astype(np.float32)
    lab = np.ones((80, 80), np.uint16)
    lab[20:40, 20:40] = 2
    res = train(model, [img], [lab], TrainingConfig(iterations=4, tile=92, workers=1, precision="float32",
                                                    validate_every=2))
    assert len(res.history) == 4 and all(np.isfinite(p.loss) for p in res.history)


def test_scales_average_the_plane_shown_at_each_magnification_and_count_progress():
    import torch.nn.functional as F

    from napari_unet.normalize import Normalization

    model = tiny_model(depth=1)
    model.normalization = Normalization("fixed", offset=0.0, scale=1.0)  # the same at every size, as by hand
    img = np.random.default_rng(5).random((40, 52)).astype(np.float32)
    plain = predict_probabilities(img, model, precision="float32", scales=[1])
    seen = []
    avg = predict_probabilities(img, model, precision="float32", scales=(1, 0.5),
                                progress=lambda d, t: seen.append((d, t)))
    assert avg.shape == plain.shape and not np.allclose(avg, plain, atol=1e-4)
    np.testing.assert_allclose(avg.sum(0), 1, atol=1e-5)
    assert seen[-1][0] == seen[-1][1] >= 2  # the tiles of both sizes counted, to the end
    # by hand: the half-size image's probabilities, resized back, averaged with the plain ones
    small = F.interpolate(torch.from_numpy(img)[None, None], size=(20, 26), mode="bilinear", antialias=True)
    half = predict_probabilities(small[0, 0].numpy(), model, precision="float32", scales=[1])
    back = F.interpolate(torch.from_numpy(half)[None], size=(40, 52), mode="bilinear")[0].numpy()
    np.testing.assert_allclose(avg, (plain + back) / 2, atol=1e-5)
    for bad in ([], [0.1], [1, float("nan")], "big"):
        with pytest.raises(ValueError, match="scales"):
            predict_probabilities(img, model, scales=bad)


def test_mean_entropy_is_zero_when_sure_and_log_k_when_undecided():
    from napari_unet.predict import mean_entropy

    sure = np.zeros((3, 8, 8), np.float32)
    sure[1] = 1
    assert mean_entropy(sure) == 0
    assert mean_entropy(np.full((3, 8, 8), 1 / 3, np.float32)) == pytest.approx(np.log(3), rel=1e-5)


@pytest.mark.parametrize("surer", ["average", "plain", None])
def test_auto_scales_keep_the_average_only_where_it_makes_the_network_surer(monkeypatch, surer):
    import napari_unet.predict as P

    model = tiny_model(depth=1)
    img = np.random.default_rng(6).random((2, 40, 52)).astype(np.float32)  # two planes, each decided alone
    plain = predict_probabilities(img, model, precision="float32", scales=[1])
    both = predict_probabilities(img, model, precision="float32", scales=(1, 0.7))
    if surer is not None:  # force each branch: the entropy of the average is that of the plain ones -/+ 0.1
        real = P.mean_entropy
        averaged = {p: both[:, p] for p in range(2)}

        def fake(probs):
            avg = any(np.array_equal(probs, a) for a in averaged.values())
            return real(probs) + (0.1 if (surer == "plain") == avg else -0.1)

        monkeypatch.setattr(P, "mean_entropy", fake)
    auto = predict_probabilities(img, model, precision="float32")  # the default
    for p in range(2):
        if surer is None:
            surer_p = "average" if P.mean_entropy(both[:, p]) < P.mean_entropy(plain[:, p]) else "plain"
        else:
            surer_p = surer
        np.testing.assert_allclose(auto[:, p], both[:, p] if surer_p == "average" else plain[:, p], atol=1e-6)
    assert P.check_scales("auto") == list(P.AUTO_SCALES) == [1.0, 0.7]


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (3, 3)])
@pytest.mark.parametrize("tta", [False, True])
def test_auto_scales_on_images_a_few_pixels_wide(shape, tta):
    # 0.7x of them is one pixel or the same size; flipped views of one-pixel axes included
    img = np.random.default_rng(7).random(shape).astype(np.float32)
    p = predict_probabilities(img, tiny_model(depth=1), precision="float32", tta=tta)
    assert p.shape == (2, *shape) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)


def test_cli_trains_a_three_class_model_and_segments_with_tta(tmp_path):
    import tifffile

    from napari_unet.cli import main
    from napari_unet.modelfile import load_model

    rng = np.random.default_rng(0)
    img = rng.normal(0, 0.1, (80, 80)).astype(np.float32)
    lab = np.ones((80, 80), np.uint16)
    lab[20:40, 20:40] = 2
    lab[20:40, 40:60] = 3
    img[lab >= 2] += 1
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    out = tmp_path / "m3.safetensors"
    assert main(["train", "--images", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                 "--output", str(out), "--classes", "3", "--iterations", "3", "--tile", "92",
                 "--base-channels", "4", "--depth", "3", "--precision", "float32", "-q"]) == 0
    model = load_model(out)
    assert model.config.n_classes == 3 and model.class_names == ["background", "cell", "cell boundary"]
    assert main(["segment", str(tmp_path / "img.tif"), "--model", str(out), "--output", str(tmp_path / "res"),
                 "--probabilities", "--tta", "--precision", "float32", "-q"]) == 0
    probs = tifffile.imread(tmp_path / "res" / "img_probabilities.tif")
    assert probs.shape == (3, 80, 80)
    np.testing.assert_allclose(probs, predict_probabilities(img, model, precision="float32", tta=True), atol=1e-5)
    # --scales: the plane also at other magnifications, averaged; a bad value is one line, no traceback
    assert main(["segment", str(tmp_path / "img.tif"), "--model", str(out), "--output", str(tmp_path / "sc"),
                 "--probabilities", "--scales", "1", "0.7", "--precision", "float32", "-q"]) == 0
    probs = tifffile.imread(tmp_path / "sc" / "img_probabilities.tif")
    np.testing.assert_allclose(probs, predict_probabilities(img, model, precision="float32", scales=(1, 0.7)),
                               atol=1e-5)
    assert main(["segment", str(tmp_path / "img.tif"), "--model", str(out), "--output", str(tmp_path / "one"),
                 "--probabilities", "--scales", "1", "--precision", "float32", "-q"]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "one" / "img_probabilities.tif"),
                               predict_probabilities(img, model, precision="float32", scales=[1]), atol=1e-5)
    for bad in (["9"], ["big"], ["auto", "1"]):
        assert main(["segment", str(tmp_path / "img.tif"), "--model", str(out), "--output", str(tmp_path / "bad"),
                     "--scales", *bad, "-q"]) != 0
    assert not (tmp_path / "bad" / "img_labels.tif").exists()
