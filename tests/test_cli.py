import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.modelfile import save_model

from _helpers import tiny_model


@pytest.fixture
def model_file(tmp_path):
    return str(save_model(tiny_model(), tmp_path / "tiny.safetensors"))


@pytest.fixture
def image_file(tmp_path):
    p = tmp_path / "img.tif"
    tifffile.imwrite(p, (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8))
    return p


def test_segment_writes_labels_and_probabilities(tmp_path, model_file, image_file, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(image_file), "--model", model_file, "--output", str(out), "--probabilities", "-q"]) == 0
    lab = tifffile.imread(out / "img_labels.tif")
    prob = tifffile.imread(out / "img_probabilities.tif")
    assert lab.shape == (60, 80) and lab.dtype in (np.uint16, np.uint32)
    assert prob.shape == (2, 60, 80) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(0), 1, atol=1e-5)


def test_png_input_and_tile_rounding(tmp_path, model_file, capsys):
    from skimage.io import imsave

    p = tmp_path / "a.png"
    imsave(p, (np.random.default_rng(1).random((50, 50)) * 255).astype(np.uint8), check_contrast=False)
    from napari_unet.model import is_valid_input_size, valid_input_size

    cfg = tiny_model().config
    assert not is_valid_input_size(cfg, 98)
    assert main(["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o"), "--tile", "98"]) == 0
    err = capsys.readouterr().err
    assert f"--tile 98 is not a size this network accepts: using {valid_input_size(cfg, 98)}" in err
    assert (tmp_path / "o" / "a_labels.tif").exists()


def _fails(argv, capsys, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-unet: error:") and msg in err, err
    assert "Traceback" not in err


def test_missing_input(tmp_path, model_file, capsys):
    _fails(["segment", str(tmp_path / "nope.tif"), "--model", model_file, "--output", str(tmp_path)], capsys, "input not found")


def test_unreadable_image(tmp_path, model_file, capsys):
    p = tmp_path / "bad.tif"
    p.write_bytes(b"not a tiff at all")
    _fails(["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o")], capsys, "cannot read bad.tif")


def test_4d_without_axis(tmp_path, model_file, capsys):
    p = tmp_path / "4d.tif"
    tifffile.imwrite(p, np.zeros((2, 3, 40, 40), np.uint8), photometric="minisblack")
    _fails(["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o")], capsys, "say which axis holds the channels")
    assert main(["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o"), "--channel-axis", "none", "-q"]) == 0
    assert tifffile.imread(tmp_path / "o" / "4d_labels.tif").shape == (2, 3, 40, 40)


def test_model_channel_mismatch(tmp_path, image_file, capsys):
    m = str(save_model(tiny_model(in_channels=3), tmp_path / "rgb.safetensors"))
    _fails(["segment", str(image_file), "--model", m, "--output", str(tmp_path / "o")], capsys, "expects 3 channels")


def test_unknown_model(tmp_path, image_file, capsys):
    _fails(["segment", str(image_file), "--model", "no-such-model", "--output", str(tmp_path)], capsys, "no built-in model or file named")


def test_never_overwrites_an_input(tmp_path, model_file, capsys):
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, np.zeros((30, 30), np.uint8))
    victim = tmp_path / "x_labels.tif"
    tifffile.imwrite(victim, np.full((30, 30), 7, np.uint8))
    _fails(["segment", str(p), str(victim), "--model", model_file, "--output", str(tmp_path)], capsys, "would overwrite an input")
    assert tifffile.imread(victim).max() == 7


def test_bad_device(tmp_path, model_file, image_file, capsys):
    _fails(["segment", str(image_file), "--model", model_file, "--output", str(tmp_path), "--device", "tpu"], capsys, "unknown device")


def test_models_lists_name_then_description(capsys):
    from napari_unet.builtin import list_builtin_models

    rc = main(["models"])
    out = capsys.readouterr().out
    if not list_builtin_models():
        assert rc == 1
        return
    lines = out.strip().splitlines()
    assert rc == 0 and len(lines) == len(list_builtin_models())
    for line, (name, desc) in zip(lines, list_builtin_models().items()):
        assert line.split()[0] == name and desc[:20] in line


def test_evaluate(tmp_path, capsys):
    t = np.zeros((20, 20), np.uint16)
    t[2:8, 2:8] = 1
    t[10:18, 10:18] = 2
    tifffile.imwrite(tmp_path / "t.tif", t)
    tifffile.imwrite(tmp_path / "p.tif", t)
    assert main(["evaluate", "--predictions", str(tmp_path / "p.tif"), "--truth", str(tmp_path / "t.tif")]) == 0
    out = capsys.readouterr().out
    assert "pixel_error" in out and "1.0000" in out  # AP of a perfect prediction
    _fails(["evaluate", "--predictions", str(tmp_path / "p.tif"), "--truth"] + [str(tmp_path / "t.tif")] * 2, capsys, "in pairs")
