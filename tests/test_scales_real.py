"""Segment's default look at 0.7x, on real images: it must not cost the images where averaging
the two magnifications hurts (dim nuclei, debris), and must keep a gain on clean ones."""

import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import DATA, needs_data

from napari_unet.builtin import builtin_model_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

pytestmark = [needs_data, pytest.mark.skipif(builtin_model_path("fluo-nuclei") is None,
                                             reason="built-in model fluo-nuclei not installed")]


def _ap(pairs, model, scales):
    from napari_unet.metrics import average_precision
    from napari_unet.predict import segment

    return float(np.mean([average_precision(segment(img, model, scales=scales).labels, np.where(lab >= 2, lab - 1, 0))
                          for img, lab in pairs]))


@pytest.mark.skipif(not (DATA / "dsb2018").is_dir(), reason="DSB2018 images absent")
def test_auto_scales_keep_the_clean_gain_without_the_loss_on_hard_images():
    import builtin_models as B

    from napari_unet.modelfile import load_model

    model = load_model("fluo-nuclei")
    _, val, _ = B.dsb_split()  # the 10 validation images (not the held-out test images)
    clean = [B.dsb(n) for n in val]
    hard = [B._corrupt(p, 2000 + k) for k, p in enumerate(clean)]  # the same, as poorer microscopes record them
    plain = {name: _ap(pairs, model, [1]) for name, pairs in (("clean", clean), ("hard", hard))}
    both = {name: _ap(pairs, model, (1, 0.7)) for name, pairs in (("clean", clean), ("hard", hard))}
    auto = {name: _ap(pairs, model, "auto") for name, pairs in (("clean", clean), ("hard", hard))}
    # always averaging: the gain on clean images and the loss on hard ones that the rule is for
    assert both["clean"] > plain["clean"] + 0.01 and both["hard"] < plain["hard"] - 0.03, (plain, both)
    assert auto["clean"] >= plain["clean"] + 0.01, (plain, auto)  # measured: 0.818 -> 0.841
    assert auto["hard"] >= plain["hard"] - 0.005, (plain, auto)  # measured: 0.729 -> 0.738
