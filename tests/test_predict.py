import numpy as np
import pytest

from napari_unet.device import DeviceError, resolve_device
from napari_unet.model import UNetConfig
from napari_unet.predict import InputError, as_planes, choose_tile, predict_probabilities, segment

from _helpers import tiny_model


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


def test_segment_labels_are_instances():
    model = tiny_model()
    # a model whose foreground is "bright": set the head to foreground = normalised intensity
    import torch

    with torch.no_grad():
        for p in model.network.parameters():
            p.zero_()
    img = np.zeros((64, 64), np.float32)
    img[5:20, 5:20] = 1
    img[30:50, 30:60] = 1
    # the zero network predicts 0.5 everywhere; threshold below gives one component, above none
    res = segment(img, model, threshold=0.6)
    assert res.labels.max() == 0 and res.probabilities.shape == (2, 64, 64)
    res = segment(img, model, threshold=0.4)
    assert res.labels.max() == 1


def test_bfloat16_agrees_with_float32():
    model = tiny_model(seed=5)
    img = np.random.default_rng(7).random((120, 90)).astype(np.float32)
    a = predict_probabilities(img, model, precision="float32")
    b = predict_probabilities(img, model, precision="bfloat16")
    assert np.abs(a - b).max() < 0.05
    with pytest.raises(InputError, match="unknown precision"):
        predict_probabilities(img, model, precision="fp8")
