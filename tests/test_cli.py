import hashlib
import os

import numpy as np
import pytest
import tifffile
from _helpers import tiny_model

from napari_unet.cli import main
from napari_unet.modelfile import save_model


@pytest.fixture
def model_file(tmp_path, tiny_model_file):
    """A copy of the tiny model file (some tests train into it)."""
    import shutil

    return str(shutil.copyfile(tiny_model_file, tmp_path / "tiny.safetensors"))


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
    # the tiny network (3 levels, two 2x2 poolings, valid 3x3 convolutions) takes inputs of 60 + 4k
    # pixels: 98 lies halfway between 96 and 100 and is rounded up
    assert main(["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o"), "--tile", "98"]) == 0
    err = capsys.readouterr().err
    assert "--tile 98 is not a size this network accepts: using 100" in err
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
    for extra in ([], ["--overwrite"]):
        _fails(["segment", str(p), str(victim), "--model", model_file, "--output", str(tmp_path), *extra], capsys,
               "x_labels.tif is an input file: it is never replaced")
    assert tifffile.imread(victim).max() == 7


def test_bad_device(tmp_path, model_file, image_file, capsys):
    _fails(["segment", str(image_file), "--model", model_file, "--output", str(tmp_path), "--device", "tpu"], capsys, "unknown device")


def test_models_lists_name_then_description(capsys):
    from pathlib import Path

    import napari_unet

    installed = sorted(p.stem for p in (Path(napari_unet.__file__).parent / "models").glob("*.safetensors"))
    if not installed:
        pytest.skip("no built-in model file in src/napari_unet/models/")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sorted(line.split()[0] for line in lines) == installed  # one line per model file
    for line in lines:
        assert len(line.split()) >= 4  # the name, then a description in words
    described = {line.split()[0]: line for line in lines}
    if "fluo-nuclei" in described:
        assert "nuclei" in described["fluo-nuclei"].lower().split(None, 1)[1]


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


# ------------------------------------------------------------------- never replace a file unasked


def digest(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def _tif(path, shape=(40, 50), seed=0, dtype=np.uint8):
    tifffile.imwrite(path, (np.random.default_rng(seed).random(shape) * 200).astype(dtype))
    return path


def test_segment_refuses_to_replace_an_existing_result(tmp_path, model_file, image_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    truth = out / "img_labels.tif"
    tifffile.imwrite(truth, np.full((60, 80), 3, np.uint16))
    os.chmod(truth, 0o444)
    before = digest(truth)
    _fails(["segment", str(image_file), "--model", model_file, "--output", str(out)], capsys,
           "img_labels.tif already exists: add --overwrite to replace it")
    assert digest(truth) == before and sorted(f.name for f in out.iterdir()) == ["img_labels.tif"]
    assert main(["segment", str(image_file), "--model", model_file, "--output", str(out), "--overwrite", "-q"]) == 0
    assert digest(truth) != before


def test_segment_keeps_full_file_names(tmp_path, model_file, capsys):
    a = _tif(tmp_path / "2024.01.15_wellA.tif", seed=1)
    b = _tif(tmp_path / "2024.01.16_wellB.tif", seed=2)
    out = tmp_path / "out"
    assert main(["segment", str(a), str(b), "--model", model_file, "--output", str(out), "-q"]) == 0
    assert sorted(f.name for f in out.iterdir()) == ["2024.01.15_wellA_labels.tif", "2024.01.16_wellB_labels.tif"]


def test_same_name_from_two_folders(tmp_path, model_file, capsys):
    a = _tif((tmp_path / "plateA").mkdir() or tmp_path / "plateA" / "well1.tif", seed=1)
    b = _tif((tmp_path / "plateB").mkdir() or tmp_path / "plateB" / "well1.tif", seed=2)
    out = tmp_path / "out"
    _fails(["segment", str(a), str(b), "--model", model_file, "--output", str(out)], capsys,
           "would both write well1_labels.tif")
    # two separate runs (two processes) into one folder: the second refuses, the first result stays
    assert main(["segment", str(a), "--model", model_file, "--output", str(out), "-q"]) == 0
    first = digest(out / "well1_labels.tif")
    _fails(["segment", str(b), "--model", model_file, "--output", str(out)], capsys, "already exists")
    assert digest(out / "well1_labels.tif") == first


def _train_args(tmp_path, image, labels, out, *extra):
    return ["train", "--images", str(image), "--labels", str(labels), "--label-format", "instances",
            "--output", str(out), "--iterations", "2", "--tile", "124", "--base-channels", "4", "--depth", "3",
            "--precision", "float32", "-q", *extra]


@pytest.fixture
def train_pair(tmp_path):
    img = np.zeros((60, 60), np.float32)
    inst = np.zeros((60, 60), np.uint16)
    img[10:25, 10:25] = inst[10:25, 10:25] = 1
    img[35:50, 30:48] = 1
    inst[35:50, 30:48] = 2
    tifffile.imwrite(tmp_path / "timg.tif", img * 100)
    tifffile.imwrite(tmp_path / "tlab.tif", inst)
    return tmp_path / "timg.tif", tmp_path / "tlab.tif"


def test_train_never_replaces_validation_images_or_the_start_model(tmp_path, train_pair, model_file, capsys):
    img, lab = train_pair
    vimg = _tif(tmp_path / "vimg.tif", (60, 60))
    before = digest(vimg)
    for extra in ([], ["--overwrite"]):
        _fails(_train_args(tmp_path, img, lab, vimg, "--validation-images", str(vimg), "--validation-labels", str(lab),
                           *extra), capsys, "vimg.tif is an input file: it is never replaced")
    assert digest(vimg) == before
    start = digest(model_file)
    _fails(_train_args(tmp_path, img, lab, model_file, "--model", model_file), capsys,
           "is the --model start file: add --overwrite")
    assert digest(model_file) == start
    existing = tmp_path / "old.safetensors"
    existing.write_bytes(open(model_file, "rb").read())
    _fails(_train_args(tmp_path, img, lab, existing), capsys, "old.safetensors already exists: add --overwrite")
    assert digest(existing) == start
    assert main(_train_args(tmp_path, img, lab, model_file, "--model", model_file, "--overwrite",
                            "--fine-tune", "no")) == 0
    from napari_unet.modelfile import load_model

    m = load_model(model_file)
    assert m.provenance["trained_from"] == "tiny" and m.name == "tiny" and "trained further from tiny" in m.description


def test_train_output_a_folder_or_under_a_file(tmp_path, train_pair, capsys):
    img, lab = train_pair
    _fails(_train_args(tmp_path, img, lab, tmp_path), capsys, "is a folder: give a file name")
    _fails(_train_args(tmp_path, img, lab, img / "m.safetensors"), capsys, "timg.tif is a file, not a folder")


def test_segment_nan_pixels_warn_in_one_line(tmp_path, model_file, capsys):
    img = (np.random.default_rng(0).random((60, 80)) * 200).astype(np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", img)
    assert main(["segment", str(tmp_path / "nan.tif"), "--model", model_file, "--output", str(tmp_path / "o"),
                 "--probabilities", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.strip() == ("napari-unet: warning: 1 of 4800 pixels (0.021 %) are NaN or infinite: treated as missing "
                           "data (filled with the image's dark level before normalisation)")
    assert np.isfinite(tifffile.imread(tmp_path / "o" / "nan_probabilities.tif")).all()


def test_segment_refuses_channels_last_and_picks_a_channel(tmp_path, model_file, capsys):
    img = (np.random.default_rng(0).random((72, 72, 2)) * 200).astype(np.uint8)
    tifffile.imwrite(tmp_path / "two.tif", img, photometric="minisblack", planarconfig="contig")
    assert tifffile.imread(tmp_path / "two.tif").shape == (72, 72, 2)
    out = tmp_path / "o"
    _fails(["segment", str(tmp_path / "two.tif"), "--model", model_file, "--output", str(out)], capsys,
           "has 2 channels along axis 2 (channels last), but the model takes 1: pick one channel")
    assert not out.exists() or not any(out.iterdir())
    assert main(["segment", str(tmp_path / "two.tif"), "--model", model_file, "--output", str(out), "--channel", "1",
                 "-q"]) == 0
    assert tifffile.imread(out / "two_labels.tif").shape == (72, 72)


def _one_line(capsys, msg, code, argv):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and "Traceback" not in err[0], err


def test_batch_goes_on_past_bad_files_and_reports_them_at_the_end(tmp_path, model_file, capsys):
    good1 = _tif(tmp_path / "a.tif", seed=1)
    bad = tmp_path / "b.tif"
    bad.write_bytes(b"not a tif")
    good2 = _tif(tmp_path / "c.tif", seed=2)
    out = tmp_path / "out"
    rc = main(["segment", str(good1), str(bad), str(tmp_path / "missing.tif"), str(good2), "--model", model_file,
               "--output", str(out), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[0].startswith("napari-unet: error: cannot read b.tif")
    assert err[1].startswith("napari-unet: error: input not found") and "missing.tif" in err[1]
    assert err[2] == (f"napari-unet: error: 2 of 4 images failed (b.tif, missing.tif); the others were written to {out}")
    assert sorted(f.name for f in out.iterdir()) == ["a_labels.tif", "c_labels.tif"]


def test_train_on_an_empty_mask_is_refused(tmp_path, train_pair, capsys):
    img, _ = train_pair
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros((60, 60), np.uint16))
    out = tmp_path / "m.safetensors"
    for fmt in ("instances", "binary"):
        argv = _train_args(tmp_path, img, tmp_path / "empty.tif", out)
        argv[argv.index("--label-format") + 1] = fmt
        _one_line(capsys, "the annotations hold no cell", 2, argv)
    assert not out.exists()


# ------------------------------------------------------------------- one line, exit 2, 130, 143


def test_output_under_a_file(tmp_path, model_file, image_file, capsys):
    _one_line(capsys, f"cannot make the --output folder {image_file}/sub: {image_file} is a file", 2,
              ["segment", str(image_file), "--model", model_file, "--output", str(image_file / "sub")])


def test_write_error_after_the_work_saves_the_result_elsewhere(tmp_path, model_file, image_file, capsys, monkeypatch):
    import napari_unet.io as io

    real = io.write_labels
    out = tmp_path / "out"

    def flaky(path, labels, overwrite=False):
        if path.parent == out:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, labels, overwrite=overwrite)

    monkeypatch.setattr(io, "write_labels", flaky)
    assert main(["segment", str(image_file), "--model", model_file, "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"napari-unet: error: could not write {out}/img_labels.tif "
                                               f"(Permission denied: {out}/img_labels.tif); the result was saved to ")
    kept = err[0].rsplit(" to ", 1)[1].removesuffix(" instead")
    assert tifffile.imread(kept).shape == (60, 80)


def test_ctrl_c_during_segment(tmp_path, model_file, capsys, monkeypatch):
    import napari_unet.predict as P

    a, b = _tif(tmp_path / "a.tif", seed=1), _tif(tmp_path / "b.tif", seed=2)
    real, calls = P.predict_probabilities, []

    def interrupted_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(P, "predict_probabilities", interrupted_second)
    out = tmp_path / "out"
    _one_line(capsys, f"napari-unet: interrupted during b.tif: 1 of 2 images were finished and written to {out}; "
                      "nothing half-written was left", 130,
              ["segment", str(a), str(b), "--model", model_file, "--output", str(out), "-q"])
    assert sorted(f.name for f in out.iterdir()) == ["a_labels.tif"]


def test_sigterm_during_a_write_leaves_no_part_file(tmp_path, model_file, image_file, capsys, monkeypatch):
    import signal

    real = tifffile.imwrite

    def killed(path, *a, **k):
        real(path, *a, **k)  # the temporary file is complete on disk ...
        os.kill(os.getpid(), signal.SIGTERM)  # ... and SIGTERM arrives before it is published

    monkeypatch.setattr(tifffile, "imwrite", killed)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGTERM)
    _one_line(capsys, "napari-unet: terminated during img.tif: no result was written; nothing half-written was left", 143,
              ["segment", str(image_file), "--model", model_file, "--output", str(out), "-q"])
    assert list(out.iterdir()) == []  # no .img_labels.tif.XXXX.part
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--threshold", "2"], "--threshold must be a probability between 0 and 1, not 2.0"),
        (["--threshold", "nan"], "--threshold must be a probability between 0 and 1, not nan"),
        (["--seed-threshold", "-1"], "--seed-threshold must be a probability between 0 and 1"),
        (["--min-size", "-5"], "--min-size must be at least 0, not -5"),
        (["--tile", "0"], "--tile must be at least 1, not 0"),
        (["--channel-axis", "none", "--channel", "0"], "--channel picks one channel along --channel-axis"),
    ],
)
def test_segment_argument_validation(tmp_path, model_file, image_file, capsys, extra, msg):
    out = tmp_path / "out"
    _one_line(capsys, msg, 2, ["segment", str(image_file), "--model", model_file, "--output", str(out), *extra])
    assert not out.exists()


def test_empty_model_name(tmp_path, image_file, capsys):
    _one_line(capsys, "no model given: name a built-in model", 2,
              ["segment", str(image_file), "--model", "", "--output", str(tmp_path / "o")])


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--tile", "0"], "--tile must be a whole number >= 1, not 0"),
        (["--sigma", "0"], "w0 must be >= 0 and --sigma > 0"),
        (["--validate-every", "0"], "--validate-every must be a whole number >= 1, not 0"),
        (["--learning-rate", "1e4"], "--learning-rate must be above 0 and at most 1, not 10000.0"),
        (["--batch-size", "0"], "--batch-size must be a whole number >= 1, not 0"),
        (["--iterations", "0"], "--iterations must be a whole number >= 1, not 0"),
        (["--mix-with-start", "1.5"], "--mix-with-start is the share of the way"),
    ],
)
def test_train_argument_validation(tmp_path, train_pair, capsys, extra, msg):
    img, lab = train_pair
    out = tmp_path / "m.safetensors"
    _one_line(capsys, msg, 2, _train_args(tmp_path, img, lab, out, *extra))
    assert not out.exists()


def test_train_a_new_network_with_input_compression(tmp_path, train_pair, capsys):
    from napari_unet.modelfile import load_model

    img, lab = train_pair
    out = tmp_path / "m.safetensors"
    assert main(_train_args(tmp_path, img, lab, out, "--input-compression", "30")) == 0
    assert load_model(out).config.input_compression == 30.0
    _one_line(capsys, "input_compression must be a finite number >= 0", 2,
              _train_args(tmp_path, img, lab, tmp_path / "n.safetensors", "--input-compression", "-1"))
    both = tmp_path / "both.safetensors"
    assert main(_train_args(tmp_path, img, lab, both, "--input-compression", "30", "--keep-linear")) == 0
    assert load_model(both).config.keep_linear
    _one_line(capsys, "keep_linear needs input_compression > 0", 2,
              _train_args(tmp_path, img, lab, tmp_path / "k.safetensors", "--keep-linear"))


def test_fifo_as_labels_is_refused_without_hanging(tmp_path, train_pair, capsys):
    img, _ = train_pair
    fifo = tmp_path / "labels.tif"
    os.mkfifo(fifo)
    _one_line(capsys, "labels.tif is not a regular file", 2, _train_args(tmp_path, img, fifo, tmp_path / "m.safetensors"))


def test_model_header_with_a_string_threshold(tmp_path, image_file, capsys):
    m = tiny_model()
    m.postprocessing = {"threshold": 0.5}
    p = save_model(m, tmp_path / "m.safetensors")
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata())
    card = json.loads(meta["model"])
    card["postprocessing"]["threshold"] = "0.5"
    meta["model"] = json.dumps(card)
    save_file(load_file(str(p)), str(tmp_path / "s.safetensors"), metadata=meta)
    _one_line(capsys, "s.safetensors has an inconsistent header: threshold must be a probability between 0 and 1, "
                      "not '0.5'", 2,
              ["segment", str(image_file), "--model", str(tmp_path / "s.safetensors"), "--output", str(tmp_path / "o")])


def test_evaluate_refuses_stacks_and_negative_ids(tmp_path, capsys):
    t = np.zeros((20, 20), np.int16)
    t[2:8, 2:8] = 1
    tifffile.imwrite(tmp_path / "t.tif", t)
    tifffile.imwrite(tmp_path / "s.tif", np.stack([t, t]))
    _one_line(capsys, "s.tif has shape (2, 20, 20): evaluate takes 2D label images", 2,
              ["evaluate", "--predictions", str(tmp_path / "s.tif"), "--truth", str(tmp_path / "t.tif")])
    tifffile.imwrite(tmp_path / "n.tif", -t)
    _one_line(capsys, "n.tif / t.tif: instance ids must be >= 0", 2,
              ["evaluate", "--predictions", str(tmp_path / "n.tif"), "--truth", str(tmp_path / "t.tif")])


# ------------------------------------------------------------------- interrupted training


def _interrupt_at(monkeypatch, call, action):
    import napari_unet.train as T

    real, n = T.weighted_cross_entropy, []

    def loss(*a, **k):
        n.append(1)
        if len(n) == call:
            action()
        return real(*a, **k)

    monkeypatch.setattr(T, "weighted_cross_entropy", loss)


def test_ctrl_c_in_training_saves_the_best_so_far_with_its_own_card(tmp_path, train_pair, model_file, capsys,
                                                                      monkeypatch):
    import signal

    from napari_unet.modelfile import load_model

    img, lab = train_pair
    out = tmp_path / "ft.safetensors"
    # first Ctrl-C during iteration 3: the loop stops after it and saves (no validation yet)
    _interrupt_at(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    argv = _train_args(tmp_path, img, lab, out, "--model", model_file)
    argv[argv.index("--iterations") + 1] = "50"
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130
    assert err[-1] == (f"napari-unet: interrupted after 3 of 50 iterations: the best model so far (iteration 3) was "
                       f"saved to {out}; its card records both")
    m = load_model(out)
    assert m.name == "ft" and m.description.startswith("trained further from tiny")  # tiny was never trained
    p = m.provenance
    assert p["trained_from"] == "tiny" and p["iterations"] == 3 and p["iterations_planned"] == 50
    assert p["finished"] is False and p["best_iteration"] == 3


def test_hard_interrupt_before_the_first_checkpoint_never_claims_an_older_file(tmp_path, train_pair, model_file,
                                                                               capsys, monkeypatch):
    from napari_unet.modelfile import load_model

    img, lab = train_pair
    old = tmp_path / "old.safetensors"
    old.write_bytes(open(model_file, "rb").read())
    before = digest(old)

    def stop():
        raise KeyboardInterrupt

    # interrupted during the very first iteration: nothing learnt, nothing written, the old file intact
    _interrupt_at(monkeypatch, 1, stop)
    argv = _train_args(tmp_path, img, lab, old, "--overwrite")
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"napari-unet: interrupted before the first iteration: nothing was written ({old} is unchanged)"
    assert digest(old) == before
    # interrupted at iteration 4 of 50, before the first validation (every 50): iterations 1-3 are kept
    monkeypatch.undo()
    _interrupt_at(monkeypatch, 4, stop)
    argv = _train_args(tmp_path, img, lab, old, "--overwrite", "--model", model_file)
    argv[argv.index("--iterations") + 1] = "50"
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"napari-unet: interrupted after 3 of 50 iterations: the best model so far (iteration 3) was saved to {old}")
    assert load_model(old).provenance["iterations"] == 3 and digest(old) != before


def test_too_large_for_memory_is_refused_before_reading(tmp_path, model_file, monkeypatch, capsys):
    p = tmp_path / "big.tif"
    tifffile.imwrite(p, np.zeros((3000, 3000), np.uint16), compression="zlib")
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "8M")
    _one_line(capsys, "napari-unet: error: big.tif: reading big.tif (its decompressed size) needs 17.2 MiB, but 8.0 MiB "
                      "are available", 2, ["segment", str(p), "--model", model_file, "--output", str(tmp_path / "o")])


def test_sigterm_in_training_saves_and_exits_143(tmp_path, train_pair, capsys, monkeypatch):
    import signal

    from napari_unet.modelfile import load_model

    img, lab = train_pair
    out = tmp_path / "m.safetensors"
    _interrupt_at(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    argv = _train_args(tmp_path, img, lab, out)
    argv[argv.index("--iterations") + 1] = "50"
    assert main(argv) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"napari-unet: terminated after 2 of 50 iterations: the best model so far (iteration 2) was saved to {out}")
    assert load_model(out).provenance["finished"] is False
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.endswith(".part")) == []


# ------------------------------------------------------------------- napari-unet train


def test_train_writes_a_model_that_segments(tmp_path, train_pair, capsys):
    from napari_unet.modelfile import load_model

    img, lab = train_pair
    out = tmp_path / "new.safetensors"
    assert main(_train_args(tmp_path, img, lab, out)) == 0
    m = load_model(out)
    assert m.name == "new" and m.config.base_channels == 4 and m.config.depth == 3
    assert m.provenance["iterations"] == 2 and m.provenance["finished"] is True
    assert main(["segment", str(img), "--model", str(out), "--output", str(tmp_path / "o"), "-q"]) == 0
    assert tifffile.imread(tmp_path / "o" / "timg_labels.tif").shape == (60, 60)


def _two_squares():
    inst = np.zeros((60, 60), np.uint16)
    inst[10:25, 10:25] = 1
    inst[35:50, 30:48] = 2
    return inst


@pytest.mark.parametrize("fmt", ["convention", "instances", "binary"])
def test_train_label_format(tmp_path, train_pair, capsys, monkeypatch, fmt):
    import napari_unet.train as T

    img, _ = train_pair
    inst = _two_squares()
    # the same two cells, written the three ways; in the convention: 1 = background, 2 and 3 = cells
    expected = inst + 1
    written = {"convention": expected, "instances": inst, "binary": (inst > 0).astype(np.uint8) * 255}[fmt]
    tifffile.imwrite(tmp_path / "lab.tif", written)
    seen, real = [], T.train

    def recording(model, images, labels, *a, **k):
        seen.extend(labels)
        return real(model, images, labels, *a, **k)

    monkeypatch.setattr(T, "train", recording)
    argv = _train_args(tmp_path, img, tmp_path / "lab.tif", tmp_path / "m.safetensors")
    argv[argv.index("--label-format") + 1] = fmt
    argv[argv.index("--iterations") + 1] = "1"
    assert main(argv) == 0
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], expected)
