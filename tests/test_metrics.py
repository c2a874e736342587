import numpy as np
import pytest

from napari_unet.metrics import (
    average_precision,
    evaluate,
    iou,
    match_instances,
    pixel_error,
    rand_error,
    rand_scores,
)


def square(shape, y, x, size, value=1, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    out[y : y + size, x : x + size] = value
    return out


def test_perfect_prediction():
    t = square((20, 20), 2, 2, 5, 1)
    square((20, 20), 10, 10, 6, 2, t)
    s = evaluate(t, t)
    assert s["pixel_error"] == 0 and s["iou"] == 1
    assert s["rand_error"] == pytest.approx(0.0, abs=1e-12)
    assert s["ap50"] == 1 and s["mean_ap"] == 1 and s["tp"] == 2 and s["fp"] == s["fn"] == 0
    # relabelling the prediction does not matter
    assert evaluate(np.where(t > 0, 9 - t, 0), t)["ap75"] == 1


def test_pixel_error_and_iou_hand_computed():
    t = np.zeros((4, 4), int)
    t[0, :3] = 1
    t[1, :3] = 1  # 6 px
    p = np.zeros((4, 4), bool)
    p[0, 1:3] = True
    p[1, 2:4] = True  # 4 px, 3 overlap
    assert pixel_error(p, t) == pytest.approx(4 / 16)
    assert iou(p, t) == pytest.approx(3 / 7)
    assert iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_split_object():
    t = square((10, 10), 1, 1, 4, 1)
    p = np.zeros_like(t)
    p[1:5, 1:3] = 1
    p[1:5, 3:5] = 2  # two halves: IoU 0.5 each, not > 0.5
    m = match_instances(p, t)
    assert (m.tp, m.fp, m.fn) == (0, 2, 1)
    p[1:5, 1:4] = 1
    p[1:5, 4] = 2  # 12 px part: IoU 0.75
    m = match_instances(p, t)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.precision == 0.5 and m.recall == 1 and m.average_precision == 0.5
    assert m.mean_matched_iou == pytest.approx(0.75)


def test_missed_object():
    t = square((12, 12), 0, 0, 4, 3)
    square((12, 12), 6, 6, 4, 8, t)
    p = square((12, 12), 0, 0, 4, 1)
    m = match_instances(p, t)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert average_precision(p, t) == 0.5
    assert m.recall == 0.5 and m.precision == 1


def test_shifted_objects():
    t = square((10, 12), 2, 2, 4, 1)
    p1 = square((10, 12), 2, 3, 4, 1)  # IoU 12/20 = 0.6
    assert match_instances(p1, t, 0.5).tp == 1
    assert match_instances(p1, t, 0.75).tp == 0
    assert match_instances(p1, t).mean_matched_iou == pytest.approx(0.6)
    p2 = square((10, 12), 2, 4, 4, 1)  # IoU 8/24
    m = match_instances(p2, t)
    assert (m.tp, m.fp, m.fn) == (0, 1, 1) and m.average_precision == 0


def test_low_threshold_is_one_to_one():
    t = np.zeros((1, 20), int)
    t[0, :10] = 1
    t[0, 10:] = 2
    p = np.zeros((1, 20), int)
    p[0, 5:15] = 1  # IoU 1/3 with both
    p[0, :5] = 2  # IoU 1/2 with object 1
    assert match_instances(p, t, 0.5).tp == 0
    m = match_instances(p, t, 0.1)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.mean_matched_iou == pytest.approx((0.5 + 1 / 3) / 2)


def test_rand_error_ignores_boundaries():
    t = np.zeros((10, 21), int)
    t[:, :10] = 1
    t[:, 11:] = 2  # one-pixel true boundary at column 10
    p = np.zeros_like(t)
    p[:, :8] = 5
    p[:, 13:] = 6  # thick predicted boundary, columns 8..12
    assert rand_error(p, t) == pytest.approx(0.0, abs=1e-12)
    # without filling, the predicted boundary is one segment and costs
    assert rand_error(p, t, fill_pred_boundaries=False) > 0.05
    # a true boundary covered by a wrong label is ignored too
    p2 = np.where(t == 0, 7, t)
    assert rand_error(p2, t) == pytest.approx(0.0, abs=1e-12)


def test_rand_merge_hand_computed_and_matches_skimage():
    from skimage.metrics import adapted_rand_error

    t = np.zeros((4, 9), int)
    t[:, :4] = 1
    t[:, 5:] = 2  # two segments of n = 16 px, boundary column 4
    p = np.ones_like(t)  # everything merged
    n = 16
    err, prec, rec = rand_scores(p, t)
    f = (2 * n * n - 2 * n) / (3 * n * n - 2 * n)
    assert err == pytest.approx(1 - f)
    assert rec == pytest.approx(1.0)  # a merge keeps all true pairs
    assert prec == pytest.approx((2 * n * n - 2 * n) / (4 * n * n - 2 * n))
    assert err == pytest.approx(adapted_rand_error(t, p, ignore_labels=(0,))[0])
    # a split lowers recall instead
    split = t.copy()
    split[:, 7:] = 3  # true segment 2 cut in two halves of 8 px
    err_s, prec_s, rec_s = rand_scores(split, t)
    assert prec_s == pytest.approx(1.0)
    assert rec_s == pytest.approx((n * n - n + 2 * (64 - 8)) / (2 * n * n - 2 * n))
    assert err_s == pytest.approx(adapted_rand_error(t, split, ignore_labels=(0,))[0])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        evaluate(np.zeros((3, 3)), np.zeros((3, 4)))
