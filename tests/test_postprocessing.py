"""Post-processing (issue 10): the PostProcessing settings stored with a model, and each step
that turns probabilities into instance labels (watershed split, smoothing, hole filling,
minimum size), each on a map where switching the step off gives a different answer."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import tiny_model

from napari_unet.postprocess import PostProcessing, labels_from_model_output, labels_from_probabilities


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


def _n(labels) -> int:
    return int(np.unique(labels[labels > 0]).size)


def test_watershed_splits_two_touching_objects_only_with_a_seed_threshold():
    # two confident discs overlapping in a bridge of lower (but above threshold) probability
    fg = np.zeros((60, 90), np.float32)
    a, b = _disc(fg.shape, 30, 28, 16), _disc(fg.shape, 30, 54, 16)
    fg[a | b] = 0.7
    fg[_disc(fg.shape, 30, 28, 10)] = 0.95
    fg[_disc(fg.shape, 30, 54, 10)] = 0.95
    assert _n(labels_from_probabilities(fg, threshold=0.5)) == 1
    split = labels_from_probabilities(fg, threshold=0.5, seed_threshold=0.9)
    assert _n(split) == 2
    # every foreground pixel kept, each disc's centre in its own object
    assert np.count_nonzero(split) == np.count_nonzero(a | b)
    assert split[30, 20] != split[30, 62] and split[30, 20] > 0 and split[30, 62] > 0
    # a seed threshold below the threshold splits nothing
    assert _n(labels_from_probabilities(fg, threshold=0.5, seed_threshold=0.4)) == 1


def test_smoothing_keeps_an_object_with_a_thin_dark_crack_in_one_piece():
    fg = np.zeros((64, 64), np.float32)
    fg[_disc(fg.shape, 32, 32, 18)] = 0.95
    fg[:, 32] = np.where(fg[:, 32] > 0, 0.1, 0)  # a one-pixel dark line across the nucleus
    assert _n(labels_from_probabilities(fg, threshold=0.5)) == 2
    assert _n(labels_from_probabilities(fg, threshold=0.5, smooth=1.5)) == 1


def test_fill_holes_fills_the_inside_of_a_ring_only_when_asked():
    fg = np.zeros((64, 64), np.float32)
    fg[_disc(fg.shape, 32, 32, 20) & ~_disc(fg.shape, 32, 32, 8)] = 0.9
    open_ = labels_from_probabilities(fg, threshold=0.5)
    filled = labels_from_probabilities(fg, threshold=0.5, fill_holes=True)
    assert open_[32, 32] == 0 and filled[32, 32] == filled[32, 15] > 0
    assert np.count_nonzero(filled) - np.count_nonzero(open_) == np.count_nonzero(_disc(fg.shape, 32, 32, 8))


def test_min_size_removes_small_objects_and_relabels_1_to_n():
    fg = np.zeros((64, 64), np.float32)
    fg[_disc(fg.shape, 20, 20, 10)] = 0.9
    fg[50:53, 50:53] = 0.9  # 9 pixels
    fg[_disc(fg.shape, 45, 20, 8)] = 0.9
    assert _n(labels_from_probabilities(fg, min_size=0)) == 3
    kept = labels_from_probabilities(fg, min_size=10)
    assert _n(kept) == 2 and kept[51, 51] == 0 and sorted(np.unique(kept)) == [0, 1, 2]
    assert _n(labels_from_probabilities(fg, min_size=9)) == 3


def test_settings_are_validated_with_the_setting_named():
    for kw, msg in ((dict(threshold=1.5), "threshold must be a probability"),
                    (dict(seed_threshold=float("nan")), "seed_threshold must be a probability"),
                    (dict(min_size=2.5), "min_size must be a whole number"),
                    (dict(min_size=True), "min_size must be a whole number"),
                    (dict(smooth=-1), "smooth must be a number of pixels >= 0"),
                    (dict(fill_holes="yes"), "fill_holes must be true or false")):
        with pytest.raises(ValueError, match=msg):
            PostProcessing(**kw)
        with pytest.raises(ValueError, match=msg):
            PostProcessing().replace(**kw)
    with pytest.raises(ValueError, match="unknown post-processing setting 'treshold'"):
        PostProcessing().replace(treshold=0.3)
    p = PostProcessing(min_size=np.int64(7), smooth=1, seed_threshold=0)
    assert (type(p.min_size), type(p.smooth), p.seed_threshold) == (int, float, 0.0)


def test_header_dicts_become_settings_and_back():
    d = {"threshold": 0.8, "seed_threshold": 0.6, "min_size": 15, "smooth": 1, "fill_holes": True}
    p = PostProcessing.from_dict(d)
    assert p == PostProcessing(0.8, 0.6, 15, 1.0, True) and p.to_dict() == {**d, "smooth": 1.0}
    # older headers hold three settings; a newer version's unknown ones are ignored
    assert PostProcessing.from_dict({"threshold": 0.7, "min_size": 3, "later": 1}) == \
        PostProcessing(threshold=0.7, min_size=3)
    assert PostProcessing.from_dict(None) == PostProcessing()
    assert p.replace(threshold=None, min_size=2) == PostProcessing(0.8, 0.6, 2, 1.0, True)  # None keeps
    assert p.splits_touching is False and PostProcessing(0.5, 0.9).splits_touching is True


def test_model_stores_settings_and_labels_use_them(tmp_path):
    from napari_unet.modelfile import load_model, save_model

    m = tiny_model()
    m.postprocessing = {"threshold": 0.5, "min_size": 10}  # a dict, as headers hold them
    assert isinstance(m.postprocessing, PostProcessing) and m.postprocessing.min_size == 10
    with pytest.raises(ValueError, match="threshold must be a probability"):
        m.postprocessing = {"threshold": -1}
    back = load_model(save_model(m, tmp_path / "m.safetensors"))
    assert back.postprocessing == m.postprocessing
    fg = np.zeros((2, 64, 64), np.float32)
    fg[0][_disc((64, 64), 20, 20, 10)] = 0.9
    fg[0, 50:53, 50:53] = 0.9
    fg[1][_disc((64, 64), 40, 40, 12)] = 0.9
    probs = np.stack([1 - fg, fg])
    lab = labels_from_model_output(probs, back)
    assert lab.dtype == np.uint16 and lab[0, 51, 51] == 0  # min_size from the model
    assert sorted(np.unique(lab)) == [0, 1, 2]  # ids unique over the stack
    assert labels_from_model_output(probs, back, min_size=0)[0, 51, 51] > 0  # overridden


@pytest.mark.parametrize("name", ["fluo-nuclei", "em-membranes"])
def test_builtin_models_load_their_header_settings(name):
    from napari_unet.builtin import builtin_model_path
    from napari_unet.modelfile import load_model, read_model_info

    if builtin_model_path(name) is None:
        pytest.skip(f"{name} is not installed")
    header = read_model_info(builtin_model_path(name))["postprocessing"]
    assert load_model(name).postprocessing == PostProcessing(**header)


def test_command_line_flags_reach_the_labels(tmp_path, capsys, monkeypatch):
    import tifffile

    import napari_unet.postprocess as P
    from napari_unet.cli import main
    from napari_unet.modelfile import save_model

    m = tiny_model()
    m.postprocessing = {"fill_holes": True, "smooth": 2.0}
    model = str(save_model(m, tmp_path / "m.safetensors"))
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8))
    seen, real = [], P.labels_from_model_output
    monkeypatch.setattr(P, "labels_from_model_output", lambda probs, model, **kw: seen.append(kw) or real(probs, model, **kw))
    args = ["segment", str(img), "--model", model, "--output", str(tmp_path / "o"), "-q", "--overwrite"]
    assert main(args) == 0
    assert main(args + ["--no-fill-holes", "--smooth", "0", "--min-size", "3", "--seed-threshold", "0.9"]) == 0
    assert seen[0] == dict.fromkeys(PostProcessing.fields())  # the model's own settings
    assert seen[1] == {"threshold": None, "seed_threshold": 0.9, "min_size": 3, "smooth": 0.0, "fill_holes": False}
    assert main(args + ["--smooth", "-1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "napari-unet: error: --smooth must be a number of pixels >= 0, not -1.0"
