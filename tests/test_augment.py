import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.augment import (
    affine_displacement,
    augment,
    elastic_deform,
    elastic_displacement,
    grey_value,
    random_flip_rot,
    warp,
)


def blocks(h=48, w=48, size=8):
    """Label image of size x size blocks with values 1..n (piecewise constant)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy // size) * ((w + size - 1) // size) + xx // size + 1).astype(np.uint16)


def test_displacement_interpolates_coarse_grid():
    disp = elastic_displacement((41, 33), np.random.default_rng(5), grid=3, sigma=10.0)
    coarse = np.random.default_rng(5).normal(0.0, 10.0, size=(2, 3, 3))
    assert disp.shape == (2, 41, 33)
    np.testing.assert_allclose(disp[:, 0, 0], coarse[:, 0, 0], atol=1e-9)
    np.testing.assert_allclose(disp[:, 20, 16], coarse[:, 1, 1], atol=1e-9)
    np.testing.assert_allclose(disp[:, -1, -1], coarse[:, 2, 2], atol=1e-9)
    # smooth: neighbouring pixels move almost together
    assert np.abs(np.diff(disp, axis=1)).max() < 5.0


def test_shapes_dtypes_and_label_values():
    rng = np.random.default_rng(0)
    lab = blocks()
    img = rng.random((2, 48, 48)).astype(np.float32)
    wts = rng.random((48, 48)).astype(np.float32)
    out_img, out_lab, out_w = elastic_deform(img, lab, wts, rng=rng)
    assert out_img.shape == img.shape and out_img.dtype == np.float32
    assert out_lab.shape == lab.shape and out_lab.dtype == lab.dtype
    assert set(np.unique(out_lab)) <= set(np.unique(lab))
    assert set(np.unique(out_w)) <= set(np.unique(wts))
    assert not np.array_equal(out_lab, lab)  # something moved
    img2d = elastic_deform(img[0], rng=rng)
    assert isinstance(img2d, np.ndarray) and img2d.shape == (48, 48)


def test_reproducible_with_seed():
    lab = blocks()
    img = lab.astype(np.float32)
    a = augment(img, lab, rng=np.random.default_rng(42))
    b = augment(img, lab, rng=np.random.default_rng(42))
    c = augment(img, lab, rng=np.random.default_rng(43))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_zero_sigma_is_identity():
    rng = np.random.default_rng(1)
    img = rng.random((30, 40)).astype(np.float32)
    lab = blocks(30, 40, 5)
    out_img, out_lab = elastic_deform(img, lab, rng=rng, sigma=0.0)
    np.testing.assert_allclose(out_img, img, atol=1e-5)
    np.testing.assert_array_equal(out_lab, lab)


def test_labels_move_with_image():
    lab = blocks(64, 64, 16)
    img = lab.astype(np.float32)
    # nearest-neighbour image warp equals the label warp exactly
    disp = elastic_displacement(lab.shape, np.random.default_rng(7), sigma=10.0)
    img0, lab0 = warp(img, lab, displacement=disp, order=0)
    np.testing.assert_array_equal(img0, lab0.astype(np.float32))
    # cubic image warp agrees with the labels away from block edges
    out_img, out_lab = elastic_deform(img, lab, rng=np.random.default_rng(7), sigma=10.0)
    agree = np.abs(out_img - out_lab) < 0.5
    assert agree.mean() > 0.9
    assert not np.array_equal(out_lab, lab)


def test_mirror_border_matches_scipy_nearest():
    lab = blocks(20, 20, 3)
    disp = np.full((2, 20, 20), -7.3)  # samples far outside the top-left corner
    _, out = warp(lab.astype(np.float32), lab, displacement=disp)
    ref = ndi.map_coordinates(lab, np.mgrid[0:20, 0:20] + disp, order=0, mode="mirror")
    np.testing.assert_array_equal(out, ref)


def test_flip_rot_identical_and_all_variants():
    a = np.arange(9).reshape(3, 3)
    seen = set()
    for s in range(60):
        img, lab = random_flip_rot(a.astype(float), a, rng=np.random.default_rng(s))
        np.testing.assert_array_equal(img, lab)
        assert sorted(lab.ravel()) == list(range(9))
        seen.add(lab.tobytes())
    assert len(seen) == 8
    img3, lab3 = random_flip_rot(np.stack([a, a + 10]), a, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(img3[1] - 10, lab3)


def test_grey_value_monotone_and_reproducible():
    rng = np.random.default_rng(0)
    img = rng.random((16, 16)).astype(np.float32)
    out = grey_value(img, np.random.default_rng(9))
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_array_equal(out, grey_value(img, np.random.default_rng(9)))
    assert not np.allclose(out, img)
    order = np.argsort(img, axis=None)
    assert np.all(np.diff(out.ravel()[order]) >= -1e-6)


def test_augment_keeps_label_weight_pairs_and_shapes():
    rng = np.random.default_rng(4)
    lab = blocks(40, 56, 8)
    lab[:4] = 0
    wts = (lab % 5).astype(np.float32) + 0.5
    wts[lab == 0] = 0
    img = rng.random((40, 56)).astype(np.float32)
    out_img, out_lab, out_w = augment(
        img, lab, wts, rng=rng, max_rotation=10, max_shift=3, max_scale=0.1
    )
    assert out_img.shape == img.shape and out_lab.shape == lab.shape and out_w.shape == wts.shape
    pairs_in = set(zip(lab.ravel().tolist(), wts.ravel().tolist()))
    pairs_out = set(zip(out_lab.ravel().tolist(), out_w.ravel().tolist()))
    assert pairs_out <= pairs_in
    assert len(augment(img, lab, rng=rng)) == 2


def test_affine_zero_parameters_is_zero_field():
    d = affine_displacement((9, 11), np.random.default_rng(0))
    assert d.shape == (2, 9, 11) and np.all(d == 0)
    d = affine_displacement((9, 9), np.random.default_rng(0), max_rotation=30)
    np.testing.assert_allclose(d[:, 4, 4], 0, atol=1e-12)  # rotation about the centre
    assert np.abs(d).max() > 0.1


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        elastic_deform(np.zeros((4, 4)), np.zeros((5, 4)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        elastic_deform(np.zeros((2, 2, 4, 4)), rng=np.random.default_rng(0))
