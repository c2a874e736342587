"""Fine-tuning from a few strokes on one real image: never worse on another image of the same
kind, and better where the built-in model is weak (the same frames made hard: dim nuclei next
to bright out-of-focus debris, as on a microscope the model never saw)."""

import numpy as np
import pytest
import tifffile
from _helpers import DATA, needs_data, simulated_strokes

from napari_unet.builtin import builtin_model_path
from napari_unet.metrics import average_precision

HELA = DATA / "ctc_fluo_n2dl_hela"


def _hard(img, labels, seed):
    """The frame with dimmed nuclei, uneven background and debris."""
    from napari_unet.augment import degraded

    return degraded(img, labels == 0, seed, contrast=(0.1, 0.1), debris=6)


def _frames():
    return [(tifffile.imread(HELA / "images" / f"{t}.tif"), tifffile.imread(HELA / "labels" / f"{t}.tif"))
            for t in ("t13", "t52")]


def _fine_tune_and_score(train_img, train_truth, test_img, test_truth):
    from napari_unet import load_model, segment
    from napari_unet.train import TrainingConfig, train

    model = load_model("fluo-nuclei")
    before = average_precision(segment(test_img, model).labels, test_truth)
    strokes = simulated_strokes(train_truth, n_cells=15, seed=0)  # ~1.6 % of the pixels painted
    assert 0.005 < np.count_nonzero(strokes) / strokes.size < 0.05
    res = train(model, [train_img], [strokes], TrainingConfig.for_strokes(seed=0))
    after = average_precision(segment(test_img, res.model).labels, test_truth)
    return before, after, res


@needs_data
@pytest.mark.skipif(builtin_model_path("fluo-nuclei") is None, reason="built-in model fluo-nuclei not installed")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_strokes_never_make_the_model_worse_on_another_frame():
    (a, ta), (b, tb) = _frames()
    before, after, _ = _fine_tune_and_score(a, ta, b, tb)
    assert after >= before - 0.01, (before, after)


@needs_data
@pytest.mark.skipif(builtin_model_path("fluo-nuclei") is None, reason="built-in model fluo-nuclei not installed")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.xfail(strict=True, reason=(
    "known gap (issue 8): on the hard frame 15 painted nuclei do not lift the judge's score above the start "
    "model's 0.885 (fine-tuned checks 0.80-0.83, 2026-12-06), so the start model is kept and scores AP@0.5 0.831 "
    "on the other hard frame: not the +0.05 asked for; strict, so that the day it passes it is noticed"))
def test_strokes_on_a_hard_frame_improve_another_hard_frame():
    (a, ta), (b, tb) = _frames()
    before, after, res = _fine_tune_and_score(_hard(a, ta, 1), ta, _hard(b, tb, 2), tb)
    assert not res.kept_start and after > before + 0.05, (before, after)


@needs_data
@pytest.mark.skipif(builtin_model_path("fluo-nuclei") is None, reason="built-in model fluo-nuclei not installed")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_strokes_where_the_model_is_wrong_on_one_poor_microscope_frame_never_cost_the_other():
    """Both frames from one simulated poorer microscope (benchmarks/bench_strokes.py, set
    hela-scope6, style a): without the outline rule the judge took a model that shrank every
    unpainted nucleus, and the other frame lost 0.05 foreground IoU."""
    import importlib.util
    from pathlib import Path

    from napari_unet import load_model, segment
    from napari_unet.train import TrainingConfig, train

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_strokes.py"
    spec = importlib.util.spec_from_file_location("bench_strokes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, pairs, k = bench.load_set("hela-scope6")
    (img, truth), others = pairs[k], [p for j, p in enumerate(pairs) if j != k]
    model = load_model("fluo-nuclei")
    strokes = bench.simulate(truth, segment(img, model).labels > 0, "a", seed=0)
    res = train(model, [img], [strokes], TrainingConfig.for_strokes(seed=0))
    before, after = bench.score(model, others)[0], bench.score(res.model, others)[0]
    assert after >= before - 0.01, (before, after, res.best_iteration)
