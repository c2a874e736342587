"""Fine-tuning from a few strokes on one real image improves another image of the same kind."""

import numpy as np
import pytest
import tifffile

from napari_unet.builtin import builtin_model_path
from napari_unet.metrics import average_precision

from _helpers import DATA, needs_data, simulated_strokes

HELA = DATA / "ctc_fluo_n2dl_hela"


@needs_data
@pytest.mark.skipif(builtin_model_path("fluo-nuclei") is None, reason="built-in model fluo-nuclei not installed")
def test_strokes_on_one_hela_frame_improve_the_other():
    from napari_unet import load_model, segment
    from napari_unet.train import TrainingConfig, train

    train_img = tifffile.imread(HELA / "images" / "t13.tif")
    train_truth = tifffile.imread(HELA / "labels" / "t13.tif")
    test_img = tifffile.imread(HELA / "images" / "t52.tif")
    test_truth = tifffile.imread(HELA / "labels" / "t52.tif")
    model = load_model("fluo-nuclei")
    before = average_precision(segment(test_img, model).labels, test_truth)

    strokes = simulated_strokes(train_truth, n_cells=15, seed=0)  # ~1.6 % of the pixels painted
    assert 0.005 < np.count_nonzero(strokes) / strokes.size < 0.05
    res = train(model, [train_img], [strokes], TrainingConfig(iterations=60, learning_rate=5e-4, tile=252, seed=0))
    after = average_precision(segment(test_img, res.model).labels, test_truth)
    assert after > before + 0.05, (before, after)
