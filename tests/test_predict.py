import numpy as np
import pytest
from _helpers import tiny_model

from napari_unet.device import DeviceError, resolve_device
from napari_unet.model import UNetConfig
from napari_unet.predict import InputError, as_planes, choose_tile, predict_probabilities, segment


def test_stack_is_processed_plane_by_plane_with_one_progress_count():
    model = tiny_model()
    rng = np.random.default_rng(0)
    stack = rng.random((3, 70, 50)).astype(np.float32)
    seen = []
    probs = predict_probabilities(stack, model, tile=92, progress=lambda d, t: seen.append((d, t)), precision="float32")
    assert probs.shape == (2, 3, 70, 50)
    assert seen[-1][0] == seen[-1][1] and seen[-1][1] == 3 * (seen[-1][1] // 3)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    for z in range(3):
        np.testing.assert_allclose(probs[:, z], predict_probabilities(stack[z], model, tile=92, precision="float32"), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtypes(dtype):
    model = tiny_model()
    img = (np.random.default_rng(1).random((40, 40)) * 200).astype(dtype)
    p = predict_probabilities(img, model, precision="float32")
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)


def test_normalisation_is_the_models_and_scale_free():
    model = tiny_model()
    img = np.random.default_rng(2).random((50, 50))
    a = predict_probabilities((img * 255).astype(np.float32), model, precision="float32")
    b = predict_probabilities((img * 60000).astype(np.float32), model, precision="float32")
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_channel_layouts():
    m3 = tiny_model(in_channels=3)
    rgb = np.random.default_rng(3).random((40, 30, 3)).astype(np.float32)
    p_last = predict_probabilities(rgb, m3, precision="float32")
    p_first = predict_probabilities(np.moveaxis(rgb, -1, 0), m3, precision="float32")
    p_axis = predict_probabilities(rgb, m3, channel_axis=2, precision="float32")
    np.testing.assert_allclose(p_last, p_first, atol=1e-6)
    np.testing.assert_allclose(p_last, p_axis, atol=1e-6)
    planes, lead = as_planes(np.zeros((4, 5, 20, 30, 3)), 3, channel_axis=-1)
    assert planes.shape == (20, 3, 20, 30) and lead == (4, 5)
    # a colour image given to a grey model is averaged, with a warning
    with pytest.warns(UserWarning, match="colour image"):
        p = predict_probabilities(rgb, tiny_model())
    assert p.shape == (2, 40, 30)


@pytest.mark.parametrize(
    "image,kwargs,msg",
    [
        (np.zeros((2, 3, 40, 40)), {}, "say which axis holds the channels"),
        (np.zeros((40,)), {}, "at least 2 dimensions"),
        (np.zeros((0, 40)), {}, "empty"),
        (np.zeros((40, 40), complex), {}, "cannot segment an image of type"),
        (np.zeros((40, 40, 2)), {"channel_axis": 2}, "expects 1 channel"),
        (np.zeros((40, 40)), {"channel_axis": 5}, "channel axis"),
    ],
)
def test_bad_images(image, kwargs, msg):
    with pytest.raises(InputError, match=msg):
        predict_probabilities(image, tiny_model(), **kwargs)


def test_model_channel_mismatch():
    with pytest.raises(InputError, match="expects 3 channels but the image has 1"):
        predict_probabilities(np.zeros((40, 40)), tiny_model(in_channels=3))


def test_devices():
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(DeviceError):
            predict_probabilities(np.zeros((20, 20)), tiny_model(), device="cuda")


def test_tile_choice_follows_budget_and_image():
    cfg = UNetConfig(base_channels=16)
    (th, tw), m = choose_tile(cfg, (4000, 4000), memory_budget=2 * 2**30)
    assert m == 92 and th == tw and 400 <= th <= 1024
    (sh, sw), _ = choose_tile(cfg, (4000, 4000), memory_budget=200 * 2**20)
    assert sh < th
    (th, tw), _ = choose_tile(cfg, (30, 4000), memory_budget=2 * 2**30)
    assert th == 220 and tw > th  # thin image: short tiles, long ones along x
    (th, tw), _ = choose_tile(cfg, (1000, 1000), tile=570)
    assert th == tw == 572
    # never larger than the tile that covers the whole image (100 + 2 x 92 context)
    (th, tw), _ = choose_tile(cfg, (100, 1000), tile=570)
    assert (th, tw) == (284, 572)


def _brightness_network(model, monkeypatch):
    """Replace the network by a known one: the "cell" logit grows with the normalised
    brightness, p(cell) = sigmoid(12 (x - 0.45)); the context margin is cropped as a valid
    U-Net does."""
    import torch

    from napari_unet.model import context_margin

    m = context_margin(model.config)

    def forward(x):
        x = x[:, :1, m:-m, m:-m]
        return torch.cat([torch.zeros_like(x), 12 * (x - 0.45)], 1)

    monkeypatch.setattr(model.network, "forward", forward)
    return model


def two_touching_cells(shift=0):
    """Two bright cells that touch: brightness 1 at the centres, about 0.54 at the neck
    (cell, p = 0.75, but below a seed threshold of 0.95, reached above 0.70), 0 far away."""
    yy, xx = np.mgrid[:64, :64].astype(np.float32)
    a = np.exp(-((yy - 32) ** 2 + (xx - 22 - shift) ** 2) / (2 * 9.0**2))
    b = np.exp(-((yy - 32) ** 2 + (xx - 42 - shift) ** 2) / (2 * 9.0**2))
    return np.maximum(a, b)


def test_segment_separates_touching_cells(monkeypatch):
    model = _brightness_network(tiny_model(), monkeypatch)
    img = two_touching_cells()
    res = segment(img, model, threshold=0.5, seed_threshold=0.95, precision="float32")
    assert res.probabilities.shape == (2, 64, 64)
    assert set(np.unique(res.labels)) == {0, 1, 2}  # two cells, not one blob
    assert res.labels[32, 22] != res.labels[32, 42]  # one id per centre
    assert res.labels[32, 32] > 0 and res.labels[0, 0] == 0  # the neck is cell, the corner background
    # without seeds the same probabilities give one connected blob
    assert set(np.unique(segment(img, model, threshold=0.5, precision="float32").labels)) == {0, 1}


def test_label_ids_are_unique_over_a_stack(monkeypatch):
    model = _brightness_network(tiny_model(), monkeypatch)
    stack = np.stack([two_touching_cells(s) for s in (-4, 0, 4)])
    res = segment(stack, model, threshold=0.5, seed_threshold=0.95, precision="float32")
    assert res.labels.shape == (3, 64, 64)
    ids = [set(np.unique(plane[plane > 0])) for plane in res.labels]
    assert [len(i) for i in ids] == [2, 2, 2]
    assert set().union(*ids) == {1, 2, 3, 4, 5, 6}  # no id is used in two planes


def test_flat_images_are_normalised_without_blowing_up():
    from napari_unet.normalize import Normalization

    norm = Normalization()
    flat = np.full((1, 64, 64), 500, np.float32)
    hot = flat.copy()
    hot[0, 10, 10] = 1000  # one hot pixel: the 1-99.8 percentiles are both 500
    for image, value in ((flat, 0.0), (hot, 1.0)):
        stats = norm.stats(image)
        # a flat image is centred on its level and scaled by it: (1000 - 500) / 500 = 1
        np.testing.assert_allclose(stats, [[500.0, 500.0]])
        out = norm(image)
        assert np.isfinite(out).all() and out[0, 0, 0] == 0.0 and out[0, 10, 10] == value
    np.testing.assert_allclose(norm.stats(np.zeros((1, 8, 8))), [[0.0, 1.0]])  # all zero: scale 1
    model = tiny_model()
    p = predict_probabilities(flat[0], model, precision="float32")
    assert np.isfinite(p).all() and np.ptp(p[1]) < 1e-5  # one value everywhere


def test_bfloat16_agrees_with_float32():
    model = tiny_model(seed=5)
    img = np.random.default_rng(7).random((120, 90)).astype(np.float32)
    a = predict_probabilities(img, model, precision="float32")
    b = predict_probabilities(img, model, precision="bfloat16")
    assert np.abs(a - b).max() < 0.05
    with pytest.raises(InputError, match="unknown precision"):
        predict_probabilities(img, model, precision="fp8")
