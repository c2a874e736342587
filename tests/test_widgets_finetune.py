"""Annotate and fine-tune widget, and the border-weight preview, driven as a user would."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._widgets._layers import is_error, plugin_metadata  # noqa: E402
from napari_unet._widgets.finetune import FinetuneWidget  # noqa: E402
from napari_unet._widgets.weights import WeightsWidget  # noqa: E402


def open_finetune(make_napari_viewer, session, model, image):
    """A viewer with the image "blobs", ``model`` as the current one and the widget docked."""
    viewer = make_napari_viewer()
    viewer.add_image(image, name="blobs")
    session.set_model(model, "tiny")
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def test_annotate_finetune_resegment_save_reload(make_napari_viewer, qtbot, session, tiny_model, blobs, tmp_path):
    from napari_unet.modelfile import load_model

    image, painted = blobs
    viewer, w = open_finetune(make_napari_viewer, session, tiny_model, image)

    w._new.native.click()  # one click: an empty labels layer matched to the image, ready to paint a cell
    ann = viewer.layers["blobs annotations"]
    assert ann.data.shape == image.shape and not ann.data.any()
    assert plugin_metadata(ann)["role"] == "annotations" and w._annotations.value is ann
    assert ann.selected_label == 2 and ann.mode == "paint"
    assert any(str(key) == "M" for key in ann.keymap)  # the M key selects a new cell value
    ann.data = _rows(painted, 0, 55)  # strokes on the top cells
    w._bg.native.click()
    assert ann.selected_label == 1
    w._cell.native.click()
    assert ann.selected_label == int(ann.data.max()) + 1

    # the lower cells, painted in a labels layer of the user's own, validate
    valid = viewer.add_labels(_rows(painted, 55, None), name="check")
    w._valid.value = valid
    w._iterations.value = 20
    w._lr.value = 3e-3
    w._tile.value = 124
    w._train.native.click()
    qtbot.waitUntil(lambda: w.result is not None, timeout=90_000)
    qtbot.waitUntil(lambda: not w.job.running, timeout=30_000)  # the re-segmentation
    res = w.result
    assert not res.cancelled and len(res.history) == 20
    losses = [p.loss for p in res.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert len(w._plot.it) == 20 and len(w._plot.score) >= 3  # live loss and validation curve
    assert not w._plot.isHidden() and w._plot.grab().width() > 0  # drawn (QPainter, no matplotlib)
    assert session.model is res.model and session.model.name == "tiny-finetuned"
    # the model says what it is now, not what it was
    assert session.model.description.startswith("tiny fine-tuned in napari on 1 image(s) (2 painted cells")
    assert viewer.layers["blobs labels"].data.shape == image.shape  # re-segmented
    assert "blobs: " in w._status.value and "found with tiny-finetuned" in w._status.value
    assert np.array_equal(viewer.layers["check"].data, _rows(painted, 55, None))  # user layer untouched

    w._path.value = tmp_path / "finetuned"  # the suffix is added
    w._save.native.click()
    again = load_model(tmp_path / "finetuned.safetensors")
    for k, v in res.model.network.state_dict().items():
        assert np.array_equal(v.numpy(), again.network.state_dict()[k].numpy())
    assert again.provenance["trained_from"] == "tiny"
    assert again.description == session.model.description
    before = (tmp_path / "finetuned.safetensors").read_bytes()
    session.model.description = "changed"
    w._save.native.click()  # the file exists: asks first
    assert "exists already" in w._status.value
    assert (tmp_path / "finetuned.safetensors").read_bytes() == before


def _rows(painted, start, stop):
    out = np.zeros_like(painted)
    out[start:stop] = painted[start:stop]
    return out


def test_finetune_cancel_keeps_best_model_and_nothing_painted_is_reported(make_napari_viewer, qtbot, session,
                                                                           tiny_model, blobs, monkeypatch):
    from napari.utils.notifications import notification_manager

    toasts = []
    notification_manager.notification_ready.connect(lambda n: toasts.append(n.message))
    image, painted = blobs
    viewer, w = open_finetune(make_napari_viewer, session, tiny_model, image)
    w._new.native.click()
    w._train.native.click()  # nothing painted yet
    assert "Nothing painted" in w._status.value and w.job is None
    assert is_error(w._status)  # shown in red where the user acted, no lingering toast

    viewer.layers["blobs annotations"].data = painted
    w._iterations.value = 10_000
    w._tile.value = 124
    import napari_unet.train  # the engine's plain-words checks of the painting are shown (branch i8)

    monkeypatch.setattr(napari_unet.train, "check_annotations", lambda labels: ["very little background painted"],
                        raising=False)
    w._train.native.click()
    assert "very little background painted" in w._warnings.value and not w._warnings.native.isHidden()
    qtbot.waitUntil(lambda: len(w._plot.it) >= 3, timeout=60_000)
    assert not is_error(w._status)  # the earlier problem is gone once a run starts
    assert "iteration" in w.progress.label.text() and w.progress.bar.maximum() == 10_000
    w.progress.cancel_button.click()
    qtbot.waitUntil(lambda: w.result is not None, timeout=30_000)
    assert w.result.cancelled and 3 <= len(w.result.history) < 10_000
    assert session.model is w.result.model and "cancelled" in w._status.value
    qtbot.waitUntil(lambda: not w.job.running, timeout=30_000)
    assert not [t for t in toasts if "Nothing painted" in t]  # no pop-up left over from the first try


def test_weight_preview_peaks_between_touching_cells_and_follows_painting(make_napari_viewer, qtbot):
    from skimage.draw import disk

    labels = np.ones((80, 100), np.uint16)  # all background
    labels[disk((40, 30), 15, shape=labels.shape)] = 2
    labels[disk((40, 63), 15, shape=labels.shape)] = 3  # 3-pixel gap at x = 46..48
    viewer = make_napari_viewer()
    lab = viewer.add_labels(labels, name="cells")
    w = WeightsWidget(viewer)
    viewer.window.add_dock_widget(w)
    w._show.value = True
    qtbot.waitUntil(lambda: w.updates >= 1, timeout=10_000)
    overlay = viewer.layers["cells weight map"]
    assert plugin_metadata(overlay)["role"] == "weights" and overlay.blending == "additive"
    assert overlay.colorbar.visible  # a colour bar with the values
    assert "w0 and sigma change nothing" not in w._status.value and w._warning.native.isHidden()
    y, x = np.unravel_index(np.argmax(overlay.data), overlay.data.shape)
    assert 45 <= x <= 49 and 30 <= y <= 50, (y, x)
    peak = overlay.data.max()

    w._w0.value = 20.0  # live update
    qtbot.waitUntil(lambda: w.updates >= 2 and overlay.data.max() > peak + 5, timeout=10_000)

    n = w.updates
    lab.selected_label = 4  # paint a third cell: the map follows
    lab.paint((10, 90), 4)
    qtbot.waitUntil(lambda: w.updates > n, timeout=10_000)
    assert overlay.data[10, 90] > 0 and len(viewer.layers) == 2
    assert np.array_equal(viewer.layers["cells"].data[40], labels[40])  # the preview never paints

    w._show.value = False
    assert not overlay.visible


def test_weight_preview_picks_the_annotations_warns_and_explains(make_napari_viewer, qtbot, session, tiny_model, blobs):
    from skimage.draw import disk

    image, painted = blobs
    viewer, fw = open_finetune(make_napari_viewer, session, tiny_model, image)
    result = viewer.add_labels((painted > 1).astype(np.uint16) * 7, name="blobs labels",
                               metadata={"napari_unet": {"role": "labels", "source": "x"}})  # a segmentation
    w = WeightsWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w._source.value is result  # the only labels layer: shown, with a warning
    qtbot.waitUntil(lambda: not w._warning.native.isHidden(), timeout=5_000)
    assert "segmentation result" in w._warning.value and "means nothing" in w._warning.value

    fw._new.native.click()  # an annotation layer appears: the preview follows it
    ann = viewer.layers["blobs annotations"]
    qtbot.waitUntil(lambda: w._source.value is ann, timeout=5_000)
    lone = np.zeros_like(painted)
    lone[disk((40, 40), 21, shape=lone.shape)] = 1
    lone[disk((40, 40), 14, shape=lone.shape)] = 2  # one isolated cell
    ann.data = lone
    w._show.value = True
    qtbot.waitUntil(lambda: w.updates >= 1 and "change nothing" in w._status.value, timeout=10_000)
    assert "fewer than two cells" in w._status.value and w._warning.native.isHidden()
    peak = viewer.layers["blobs annotations weight map"].data.max()
    w._w0.value = 30.0  # indeed: nothing changes
    qtbot.waitUntil(lambda: w.updates >= 2, timeout=10_000)
    assert viewer.layers["blobs annotations weight map"].data.max() == peak
    ann.data = painted  # 4 cells, 21 px apart (beyond 2 sigma): still nothing from the border term
    qtbot.waitUntil(lambda: w.updates >= 3, timeout=10_000)
    assert "no two painted cells are closer than about 10 px" in w._status.value


def test_fine_tuning_again_keeps_one_origin_in_the_description(make_napari_viewer, session, tiny_model):
    from napari_unet.train import Progress, TrainingResult

    viewer = make_napari_viewer()
    session.set_model(tiny_model, "tiny")
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    result = TrainingResult(tiny_model, history=[Progress(1, 1, 0.5, 1e-3)] * 3, best_iteration=3)
    w._painted = (1, 100, 3)
    w._trained(result, "tiny")
    assert session.model.description == ("tiny fine-tuned in napari on 1 image(s) (3 painted cells, 100 painted "
                                         "pixels), 3 iterations. Started from tiny: test model")
    w._painted = (2, 300, 5)
    w._trained(result, session.source)  # fine-tuned again, from the fine-tuned model
    assert session.model.description == ("tiny fine-tuned in napari on 2 image(s) (5 painted cells, 300 painted "
                                         "pixels), 3 iterations. Started from tiny: test model")
    assert session.model.name == "tiny-finetuned" and session.source == "tiny fine-tuned"


def test_the_summary_says_what_the_fine_tuned_model_was_checked_on(make_napari_viewer, session, tiny_model):
    """A biologist sees which of the painted objects judged the result and how both models scored."""
    from napari_unet.train import Progress, TrainingResult

    viewer = make_napari_viewer()
    session.set_model(tiny_model, "tiny")
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w)
    history = [Progress(i, 4, 0.5, 1e-4, validation_score=0.5 + 0.1 * i) for i in range(1, 5)]
    result = TrainingResult(tiny_model, history=history, best_iteration=4, best_score=0.9, start_score=0.41,
                            scored_on="held-out strokes", held_out={"cells": 1, "background_strokes": 0})
    w._painted = (1, 100, 3)
    w._trained(result, "tiny")
    assert ("Score on the 1 painted cell held out from training: start model 0.41, kept model 0.90."
            in w._status.value)
    assert "best validation score" not in w._status.value


def test_a_kept_start_model_stays_current_under_its_own_name(make_napari_viewer, session, tiny_model, blobs):
    """When fine-tuning cannot beat the start model, the panel says so and does not call the
    unchanged model "fine-tuned" or segment again with it."""
    from napari_unet.train import Progress, TrainingResult

    image, _ = blobs
    viewer, w = open_finetune(make_napari_viewer, session, tiny_model, image)
    w._painted = (1, 100, 3)
    result = TrainingResult(tiny_model, history=[Progress(i, 8, 0.5, 1e-4) for i in range(1, 9)], best_iteration=0,
                            kept_start=True, scored_on="held-out strokes",
                            warnings=["Fine-tuning did not beat the start model: keeping it unchanged."])
    w._trained(result, "tiny")
    assert session.model is tiny_model and session.source == "tiny"
    assert tiny_model.name == "tiny" and "fine-tuned" not in tiny_model.description
    assert "Kept tiny unchanged" in w._status.value and "held-out strokes" in w._status.value
    assert "did not beat the start model" in w._warnings.value
    assert w.job is None  # no re-segmentation with the unchanged model
    assert "blobs labels" not in viewer.layers
