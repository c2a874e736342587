import threading

import numpy as np
import pytest
import torch
from _helpers import CountingArray, tiny_model

from napari_unet.model import context_margin, output_size, valid_input_size
from napari_unet.predict import predict_probabilities
from napari_unet.tiling import Cancelled, predict_tiled, read_mirrored, reflect_index


def untiled_reference(model, image):
    """One forward pass of the network over the whole mirror-padded image."""
    cfg = model.config
    m = context_margin(cfg)
    H, W = image.shape
    n = valid_input_size(cfg, max(H, W) + 2 * m)
    while output_size(cfg, n) < max(H, W):
        n += 16
    x = image[None].astype(np.float32)
    stats = model.normalization.stats(x)
    x = model.normalization.apply(read_mirrored(x, -m, -m, n, n), stats)
    with torch.no_grad():
        y = torch.softmax(model.network.eval()(torch.from_numpy(x)[None]), 1)[0].numpy()
    return y[:, :H, :W]


def test_reflect_index():
    assert list(reflect_index(np.arange(-3, 7), 4)) == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert list(reflect_index(np.arange(-2, 3), 1)) == [0] * 5


@pytest.mark.parametrize("shape,tile", [((37, 53), 108), ((101, 67), 124), ((300, 5), 140), ((1, 1), 92), ((129, 131), 92)])
def test_tiled_equals_untiled(shape, tile):
    model = tiny_model(depth=3)
    img = np.random.default_rng(1).integers(0, 4000, shape).astype(np.uint16)
    tiled = predict_probabilities(img, model, tile=tile, precision="float32")
    ref = untiled_reference(model, img)
    assert tiled.shape == (2,) + shape
    np.testing.assert_allclose(tiled, ref, atol=1e-5)


def test_batching_does_not_change_result():
    model = tiny_model(depth=3)
    img = np.random.default_rng(2).random((150, 170)).astype(np.float32)
    a = predict_probabilities(img, model, tile=92, batch_size=1, precision="float32")
    b = predict_probabilities(img, model, tile=92, batch_size=5, precision="float32")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_paper_network_tiles_are_seam_free():
    # the full depth-5 network: tile origins on the 16-pixel pooling grid
    model = tiny_model(depth=5, base_channels=2)
    img = np.random.default_rng(3).random((250, 90)).astype(np.float32)
    np.testing.assert_allclose(predict_probabilities(img, model, tile=220, precision="float32"), untiled_reference(model, img), atol=1e-5)


def test_progress_counts_tiles_and_cancel_stops():
    calls = []

    def fn(batch):
        return batch[:, :1, 2:-2, 2:-2]

    img = np.zeros((1, 40, 40), np.float32)
    predict_tiled(img, fn, tile=14, margin=2, out_channels=1, progress=calls.append)
    assert sum(calls) == 16
    ev = threading.Event()
    seen = []

    def fn2(batch):
        seen.append(1)
        ev.set()
        return fn(batch)

    with pytest.raises(Cancelled):
        predict_tiled(img, fn2, tile=14, margin=2, out_channels=1, cancel=ev)
    assert len(seen) == 1


def test_reads_only_from_source_and_never_writes():
    img = np.random.default_rng(4).random((1, 64, 70)).astype(np.float32)
    before = img.copy()
    src = CountingArray(img)  # raises on any write

    def crop(batch):  # the context is consumed, the centre passed on as it was read
        return batch[:, :, 6:-6, 6:-6] * 2

    got = predict_tiled(src, crop, tile=(30, 26), margin=6, out_channels=1, batch_size=3)
    np.testing.assert_array_equal(img, before)
    assert len(src.reads) >= 12 and src.read_mask().all()  # tile by tile, every pixel read once at least
    np.testing.assert_array_equal(got, 2 * before)  # each output pixel comes from its own input pixel


def test_same_padding_tiles_agree_with_one_pass():
    # zero-padded convolutions: tiles overlap by SAME_HALO pixels of context and are cropped, so
    # many small tiles give what one tile over the whole image gives
    model = tiny_model(depth=3, padding="same")
    img = np.random.default_rng(5).random((150, 170)).astype(np.float32)
    counts = []
    tiled = predict_probabilities(img, model, tile=96, precision="float32", progress=lambda d, t: counts.append(t))
    whole = predict_probabilities(img, model, tile=400, precision="float32")
    assert tiled.shape == whole.shape == (2, 150, 170)
    assert counts[-1] >= 16  # 150 x 170 in tiles of 96 - 2 x 32 = 32 pixels of output
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
