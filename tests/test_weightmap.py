import numpy as np
import pytest
from _helpers import DATA
from scipy import ndimage as ndi

from napari_unet.weightmap import border_weight, class_weights, two_nearest_distances, weight_map


def two_squares(gap):
    """10 x (11 + gap) image, row 0 unannotated, two 4x3 cells separated by `gap` columns."""
    lab = np.ones((10, 11 + gap), np.uint16)
    lab[0] = 0
    lab[3:7, 2:5] = 2
    lab[3:7, 5 + gap : 8 + gap] = 3
    return lab


@pytest.mark.parametrize("gap,d1,d2", [(1, 1.0, 1.0), (2, 1.0, 2.0)])
def test_gap_value_exact(gap, d1, d2):
    lab = two_squares(gap)
    w0, sigma = 10.0, 5.0
    w = weight_map(lab, w0=w0, sigma=sigma)
    assert w.dtype == np.float32 and w.shape == lab.shape
    n_ann = np.count_nonzero(lab)
    n_fg = np.count_nonzero(lab >= 2)
    wc_bg = n_ann / (2 * (n_ann - n_fg))
    expected = wc_bg + w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    assert w[4, 5] == pytest.approx(expected, rel=1e-6)
    # the weight peaks on the gap, on background
    iy, ix = np.unravel_index(np.argmax(w), w.shape)
    assert 5 <= ix < 5 + gap and lab[iy, ix] == 1
    # cells get w_c only
    wc_fg = n_ann / (2 * n_fg)
    np.testing.assert_allclose(w[lab >= 2], wc_fg, rtol=1e-6)


def test_unannotated_weight_zero_and_class_balance():
    lab = two_squares(2)
    w = weight_map(lab)
    assert np.all(w[lab == 0] == 0)
    assert np.all(w[lab > 0] > 0)
    wc = weight_map(lab, w0=0.0)
    np.testing.assert_allclose(wc, class_weights(lab))
    assert wc[lab == 1].sum() == pytest.approx(wc[lab >= 2].sum(), rel=1e-5)
    assert wc[lab > 0].mean() == pytest.approx(1.0, rel=1e-5)
    nb = weight_map(lab, w0=0.0, class_balance=False)
    np.testing.assert_array_equal(nb, (lab > 0).astype(np.float32))


def test_single_or_no_cell_has_no_border_term():
    lab = np.ones((12, 12), np.uint8)
    lab[4:8, 4:8] = 5
    assert np.all(border_weight(lab) == 0)
    np.testing.assert_array_equal(weight_map(lab), class_weights(lab))
    only_bg = np.ones((5, 5), np.uint8)
    np.testing.assert_array_equal(weight_map(only_bg), np.ones((5, 5), np.float32))


def test_matches_brute_force_per_cell_edt():
    rng = np.random.default_rng(3)
    lab = np.ones((64, 64), np.int32)
    for k in range(2, 12):
        y, x = rng.integers(0, 58, 2)
        lab[y : y + rng.integers(2, 7), x : x + rng.integers(2, 7)] = k
    ids = [v for v in np.unique(lab) if v >= 2]
    dist = np.sort(np.stack([ndi.distance_transform_edt(lab != v) for v in ids]), axis=0)
    d1, d2 = two_nearest_distances(lab)
    np.testing.assert_allclose(d1, dist[0], atol=1e-4)
    np.testing.assert_allclose(d2, dist[1], atol=1e-4)
    ref = np.where(lab == 1, 10.0 * np.exp(-((dist[0] + dist[1]) ** 2) / 50.0), 0.0)
    # truncation error below the documented tolerance
    np.testing.assert_allclose(border_weight(lab, 10.0, 5.0, tol=1e-3), ref, atol=1e-3)


def test_sparse_huge_ids():
    lab = np.ones((10, 12), np.uint64)
    lab[3:7, 2:5] = 2**40
    lab[3:7, 6:9] = 7
    w = border_weight(lab, 10.0, 5.0)
    assert w[4, 5] == pytest.approx(10.0 * np.exp(-4 / 50.0), rel=1e-6)


@pytest.mark.skipif(not (DATA / "isbi2012").is_dir(), reason="shared data folder ../shared/data absent")
def test_isbi_weight_peaks_on_membranes():
    from skimage.io import imread

    from napari_unet.labels import from_membranes

    lab = from_membranes(imread(DATA / "isbi2012" / "labels" / "slice00.png"))
    w = weight_map(lab)
    assert w.shape == lab.shape
    assert lab.flat[np.argmax(w)] == 1
    assert w[lab == 1].mean() > w[lab >= 2].mean()


def test_square_root_class_weights_lift_a_rare_class_less_and_keep_mean_one():
    from napari_unet.labels import to_classes
    from napari_unet.train import TrainingConfig

    lab = np.ones((60, 60), np.uint16)
    lab[10:30, 10:30] = 2
    lab[30:50, 20:40] = 3
    lab[:5] = 0
    cls = to_classes(lab, 3)
    counts = np.bincount(cls[cls >= 0], minlength=3)
    ratio = {}
    for p in (1.0, 0.5, 0.0):
        w = class_weights(lab, n_classes=3, power=p)
        assert w[cls < 0].max() == 0 and w[cls >= 0].mean() == pytest.approx(1.0)
        per = [float(w[cls == k][0]) for k in range(3)]
        # each class's weight is proportional to its pixel count to the power -p
        assert per[2] / per[0] == pytest.approx((counts[0] / counts[2]) ** p, rel=1e-5)
        ratio[p] = per[2] / per[0]
    assert ratio[1.0] > ratio[0.5] > ratio[0.0] == pytest.approx(1.0)
    np.testing.assert_allclose(class_weights(lab, n_classes=3, power=1.0), class_weights(lab, n_classes=3))
    # a wider boundary class, as the training targets have it with boundary_width=2
    wide = class_weights(lab, n_classes=3, boundary_width=2)
    assert np.count_nonzero(wide == wide[cls == 2][0]) > np.count_nonzero(cls == 2)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            class_weights(lab, power=bad)
        with pytest.raises(ValueError):  # refused even when class balance is off
            class_weights(lab, class_balance=False, power=bad)
        with pytest.raises(ValueError, match="class_balance_power"):
            TrainingConfig(class_balance_power=bad)
