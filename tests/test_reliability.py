"""Bad input ends in a correct result or a one-line message: NaN/inf pixels, non-finite
weights, channel mismatches, unlearnable annotations, what the API is given (issue 7)."""


import numpy as np
import pytest
import torch
from _helpers import blobs, tiny_model

from napari_unet.modelfile import ModelFileError, load_model, save_model
from napari_unet.normalize import Normalization, count_nonfinite
from napari_unet.predict import InputError, NonFiniteError, predict_probabilities, segment


def _blobs(shape=(96, 96)):
    return blobs(shape, ((25, 25), (25, 70), (70, 45)), 10, background=20, noise=3, brightness=100)[0]


# ------------------------------------------------------------------------- non-finite pixels


def test_nan_and_inf_pixels_are_missing_data_with_a_counted_warning():
    model = tiny_model()
    img = _blobs()
    clean = predict_probabilities(img, model, precision="float32")
    bad = img.copy()
    bad[5, 5] = np.nan
    bad[90, 90] = np.inf
    bad[50, 3] = -np.inf
    with pytest.warns(UserWarning, match=r"3 of 9216 pixels .* NaN or infinite: treated as missing"):
        probs = predict_probabilities(bad, model, precision="float32")
    assert np.isfinite(probs).all()
    # the result is what the clean image gives, the missing pixels aside
    np.testing.assert_allclose(probs[:, 20:80, 20:80], clean[:, 20:80, 20:80], atol=1e-2)
    # (the percentiles now leave out 3 of 9216 pixels: a change of a few 1e-3 at most)


def test_mostly_or_all_nan_images_get_plain_words():
    """A share of NaN pixels reads as a percentage (never '1e+02 %'); an all-NaN image says there is nothing."""
    model = tiny_model()
    img = _blobs()
    most = img.copy()
    most[:80] = np.nan
    with pytest.warns(UserWarning, match=r"7680 of 9216 pixels \(83 %\) are NaN or infinite"):
        predict_probabilities(most, model, precision="float32")
    with pytest.warns(UserWarning, match="all 9216 pixels are NaN or infinite: there is nothing to segment") as rec:
        probs = predict_probabilities(np.full_like(img, np.nan), model, precision="float32")
    assert np.isfinite(probs).all() and not any("e+0" in str(w.message) for w in rec)


def test_normalisation_ignores_non_finite_pixels():
    n = Normalization()
    img = np.linspace(0, 1, 1000, dtype=np.float32).reshape(1, 20, 50)
    bad = img.copy()
    bad[0, 0, :5] = np.nan
    bad[0, 1, :5] = np.inf
    assert count_nonfinite(bad) == 10 and count_nonfinite(img.astype(np.uint8)) == 0
    s = n.stats(bad)
    assert np.isfinite(s).all()
    out = n(bad)
    assert np.isfinite(out).all() and (out[0, 0, :5] == 0).all()
    allnan = np.full((1, 4, 4), np.nan, np.float32)
    assert np.isfinite(n(allnan)).all()


def test_training_with_nan_pixels_warns_and_trains():
    from napari_unet.train import TrainingConfig, train

    img = _blobs()
    lab = np.ones(img.shape, np.uint16)
    lab[img > 60] = 2
    img[40:44, 40:44] = np.nan
    with pytest.warns(UserWarning, match="16 of 9216 pixels of a training image are NaN or infinite"):
        res = train(tiny_model(), [img], [lab], TrainingConfig(iterations=3, tile=124, precision="float32"))
    assert all(np.isfinite(h.loss) for h in res.history)


def test_nan_weights_are_an_error_naming_the_cause(tmp_path):
    m = tiny_model()
    with torch.no_grad():
        m.network.head.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or infinite weights \\(in head.weight\\)"):
        predict_probabilities(_blobs(), m)
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        save_model(m, tmp_path / "nan.safetensors")
    # a file written by something else with NaN weights is refused at load
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    good = save_model(tiny_model(), tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(good))
    t["head.weight"][0, 0, 0, 0] = float("inf")
    save_file(t, str(tmp_path / "inf.safetensors"), metadata=meta)
    with pytest.raises(ModelFileError, match="inf.safetensors holds NaN or infinite weights \\(in head.weight\\)"):
        load_model(tmp_path / "inf.safetensors")


def test_non_finite_probabilities_are_an_error(monkeypatch):
    m = tiny_model()
    forward = m.network.forward
    monkeypatch.setattr(m.network, "forward", lambda x: forward(x) * float("inf"))
    with pytest.raises(NonFiniteError, match="NaN or infinite probabilities"):
        predict_probabilities(_blobs(), m, precision="float32")


# ------------------------------------------------------------------------- what the API is given


@pytest.mark.parametrize(
    "image, msg",
    [(None, "no image given"), ("cells.tif", "got a file name"), ([np.zeros((5, 5)), np.zeros((6, 6))], "different shapes"),
     ({"a": 1}, "cannot segment a dict")],
)
def test_api_refuses_what_is_not_an_image(image, msg):
    with pytest.raises(InputError, match=msg):
        segment(image, tiny_model())


def test_api_takes_a_nested_list_and_refuses_a_model_name():
    p = predict_probabilities(_blobs().tolist(), tiny_model(), precision="float32")
    assert p.shape == (2, 96, 96)
    with pytest.raises(InputError, match="load it first with napari_unet.load_model"):
        segment(_blobs(), "fluo-nuclei")


# ------------------------------------------------------------------------- channel mismatch


def test_channels_last_image_is_refused_never_split_into_planes():
    img = np.random.default_rng(0).random((360, 360, 2)).astype(np.float32)
    with pytest.raises(InputError, match=r"\(360, 360, 2\) has 2 channels along axis 2 \(channels last\), but the model "
                                         r"takes 1: pick one channel \(np.take\(image, k, axis=2\)"):
        segment(img, tiny_model())
    # a grey image stored (H, W, 1) is one plane
    p = predict_probabilities(img[..., :1], tiny_model(), precision="float32")
    assert p.shape == (2, 360, 360)
    # a stack of planes stays a stack
    assert predict_probabilities(img[:, :, 0].reshape(6, 60, 360), tiny_model(), precision="float32").shape == (2, 6, 60, 360)


def test_pick_channel_and_two_channel_model():
    from napari_unet.predict import pick_channel

    img = np.random.default_rng(0).random((64, 64, 2)).astype(np.float32)
    np.testing.assert_array_equal(pick_channel(img, 1), img[..., 1])
    np.testing.assert_array_equal(pick_channel(np.moveaxis(img, -1, 0), 0, 0), img[..., 0])
    with pytest.raises(InputError, match="channel 2 does not exist: axis 2 of the image \\(64, 64, 2\\) has 2"):
        pick_channel(img, 2)
    assert predict_probabilities(img, tiny_model(in_channels=2), precision="float32").shape == (2, 64, 64)
    with pytest.raises(InputError, match="takes 2 channels, but no axis of the image \\(5, 64, 64\\) has 2"):
        segment(np.zeros((5, 64, 64), np.float32), tiny_model(in_channels=2))


# ------------------------------------------------------------------------- annotations


def test_training_refuses_annotations_without_a_cell_and_warns_about_one_class():
    from napari_unet.labels import from_binary, from_instances
    from napari_unet.train import TrainingConfig, train

    img = _blobs()
    cfg = TrainingConfig(iterations=1, tile=124, precision="float32")
    for empty in (from_instances(np.zeros(img.shape, np.uint16)), from_binary(np.zeros(img.shape, bool))):
        with pytest.raises(ValueError, match="hold no cell, only 9216 background pixels: a model trained on them finds nothing"):
            train(tiny_model(), [img], [empty], cfg)
    with pytest.warns(UserWarning, match="No background is painted, only cells"):
        train(tiny_model(), [img], [from_instances(np.full(img.shape, 4, np.uint16))], cfg)
    good = np.where(img > 60, 2, 1).astype(np.uint16)
    with pytest.warns(UserWarning, match="Training image 2 has one class only \\(background\\)"):
        train(tiny_model(), [img, img], [good, np.ones_like(good)], cfg)


# ------------------------------------------------------------------------- memory, before allocating


@pytest.mark.parametrize("cfg", [dict(), dict(depth=1), dict(depth=4, base_channels=3, in_channels=2, n_classes=3),
                                 dict(padding="same", depth=2),
                                 dict(depth=3, in_channels=2, input_compression=30.0, keep_linear=True)])
def test_expected_tensor_shapes_match_the_network(cfg):
    from napari_unet.model import UNet, UNetConfig
    from napari_unet.modelheader import expected_tensor_shapes

    c = UNetConfig(**cfg)
    with torch.device("meta"):
        net = UNet(c)
    assert expected_tensor_shapes(c.to_dict()) == {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("arch, msg", [({"depth": 200}, "declares a network of depth 200, but holds"),
                                       ({"base_channels": 100000}, "tensor down.0.0.weight is \\(4, 1, 3, 3\\) but"),
                                       ({"depth": 4}, "its tensors are not those of the architecture it declares")])
def test_crafted_header_is_refused_before_building(tmp_path, monkeypatch, arch, msg):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import napari_unet.modelfile as MF

    p = save_model(tiny_model(), tmp_path / "m.safetensors")
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata())
    card = json.loads(meta["model"])
    card["architecture"].update(arch)
    meta["model"] = json.dumps(card)
    save_file(load_file(str(p)), str(tmp_path / "crafted.safetensors"), metadata=meta)

    def never(*a, **k):
        raise AssertionError("the network was built")

    monkeypatch.setattr(MF, "UNet", never)
    with pytest.raises(ModelFileError, match=msg):
        load_model(tmp_path / "crafted.safetensors")


def test_decompressed_size_is_checked_before_reading(tmp_path, monkeypatch):
    import tifffile

    from napari_unet.io import decoded_size, read_image
    from napari_unet.memory import NotEnoughMemory

    p = tmp_path / "bomb.tif"
    tifffile.imwrite(p, np.zeros((4000, 4000), np.uint16), compression="zlib")
    assert p.stat().st_size < 200_000 and decoded_size(p) == 32_000_000
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "10M")
    with pytest.raises(NotEnoughMemory, match="reading bomb.tif \\(its decompressed size\\) needs 30.5 MiB, but 10.0 MiB "
                                              "are available: convert it to OME-Zarr"):
        read_image(p)


def test_tile_is_capped_at_the_image_and_memory_is_checked(monkeypatch):
    from napari_unet.memory import NotEnoughMemory
    from napari_unet.predict import Predictor, choose_tile

    m = tiny_model()
    (th, tw), _ = choose_tile(m.config, (60, 80), tile=100000)
    assert th < 200 and tw < 200
    big, _ = choose_tile(m.config, (6000, 8000), tile=1000)
    assert big[0] >= 996
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "50M")
    with pytest.raises(NotEnoughMemory, match="segmenting an image of 1 x 4000 x 4000 pixels in memory needs 244.1 MiB, "
                                              "but 50.0 MiB are available: segment it block by block with dask"):
        predict_probabilities(np.zeros((4000, 4000), np.uint8), m, tile=124, scales=[1])
    # also at 0.7x (the default): room for the sum at one size and the one being added
    with pytest.raises(NotEnoughMemory, match="needs 488.3 MiB"):
        predict_probabilities(np.zeros((4000, 4000), np.uint8), m, tile=124)
    with pytest.raises(NotEnoughMemory, match="tiles of .* pixels in batches of 64 need"):
        Predictor.for_plane(m, (4000, 4000), tile=1000, batch_size=64, device="cpu")


def test_train_api_refuses_what_is_not_a_list_of_images():
    from napari_unet.train import TrainingConfig, train

    img = _blobs()
    lab = np.where(img > 60, 2, 1).astype(np.uint16)
    cfg = TrainingConfig(iterations=1, tile=124)
    with pytest.raises(ValueError, match="images must be a list of arrays, not 'a.tif'"):
        train(tiny_model(), "a.tif", [lab], cfg)
    with pytest.raises(ValueError, match="labels must be a list of arrays, not None"):
        train(tiny_model(), [img], None, cfg)
    with pytest.raises(ValueError, match="wrap a single image in a list"):
        train(tiny_model(), img, lab, cfg)
    with pytest.raises(InputError, match="no image given"):
        train(tiny_model(), [None], [lab], cfg)


@pytest.mark.parametrize("kw, msg", [(dict(tile=0), "tile must be a whole number >= 1"),
                                     (dict(validate_every=0), "validate_every must be"),
                                     (dict(learning_rate=1e4), "learning_rate must be above 0 and at most 1"),
                                     (dict(learning_rate=float("nan")), "learning_rate must be"),
                                     (dict(batch_size=0), "batch_size must be"),
                                     (dict(sigma=0), "sigma > 0")])
def test_training_config_validation(kw, msg):
    from napari_unet.train import TrainingConfig

    with pytest.raises(ValueError, match=msg):
        TrainingConfig(**kw)


def test_segment_validates_post_processing_before_the_work(monkeypatch):
    import napari_unet.predict as P

    monkeypatch.setattr(P, "predict_probabilities", lambda *a, **k: pytest.fail("predicted first"))
    for kw, msg in ((dict(threshold=2), "threshold must be a probability"), (dict(threshold=float("nan")), "not nan"),
                    (dict(min_size=-5), "min_size must be a whole number"), (dict(seed_threshold="x"), "seed_threshold")):
        with pytest.raises(ValueError, match=msg):
            segment(_blobs(), tiny_model(), **kw)


def test_huge_network_or_training_tile_is_refused_before_allocating(monkeypatch):
    from napari_unet.memory import NotEnoughMemory
    from napari_unet.model import UNetConfig
    from napari_unet.modelfile import SegmentationModel
    from napari_unet.train import TrainingConfig, train

    with pytest.raises(NotEnoughMemory, match="a U-Net of depth 40 and width 64 .* choose a smaller depth or width"):
        SegmentationModel.new(UNetConfig(depth=40))
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "100M")
    img = _blobs()
    lab = np.where(img > 60, 2, 1).astype(np.uint16)
    with pytest.raises(NotEnoughMemory, match="training on tiles of .* in batches of 8 needs .* use a smaller --tile"):
        train(tiny_model(), [img], [lab], TrainingConfig(iterations=1, tile=2000, batch_size=8, precision="float32"))
    # the paper's width: a small tile's activations fit in 500 MiB (155 MiB), its weights with their gradients
    # and Adam's two moments (474 MiB) on top of them do not
    monkeypatch.delenv("NAPARI_UNET_MEMORY_LIMIT")
    wide = SegmentationModel.new(UNetConfig(base_channels=64))
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "500M")
    with pytest.raises(NotEnoughMemory, match=r"training on tiles of 188x188 pixels in batches of 1 needs 62\d\.\d MiB"):
        train(wide, [img], [lab], TrainingConfig(iterations=1, tile=188, precision="float32"))
