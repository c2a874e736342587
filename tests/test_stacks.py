"""The per-plane loops the panels use (napari_unet.stacks), and the shared one-line and cancel helpers."""

import threading

import numpy as np
import pytest

from napari_unet.errors import first_line
from napari_unet.stacks import annotated_planes, weight_stack
from napari_unet.tiling import Cancelled, check_cancel, is_cancelled
from napari_unet.weightmap import weight_map


def test_weight_stack_is_the_weight_map_of_every_plane():
    lab = np.zeros((2, 3, 20, 24), np.uint16)
    lab[0, 1, 2:18, 2:22] = 1
    lab[0, 1, 5:10, 4:10] = 2
    lab[0, 1, 5:10, 12:18] = 3  # two cells 2 px apart: a border term
    lab[1, 2, 4:8, 4:8] = 1
    res = weight_stack(lab, 10.0, 5.0, True)
    assert res.weights.shape == lab.shape and res.cells == 2 and res.border_max > 1
    for idx in np.ndindex(2, 3):
        np.testing.assert_allclose(res.weights[idx], weight_map(lab[idx], w0=10.0, sigma=5.0, class_balance=True))


def test_annotated_planes_keeps_painted_planes_only_as_copies():
    img = np.arange(3 * 8 * 8 * 3, dtype=np.float32).reshape(3, 8, 8, 3)
    lab = np.zeros((3, 8, 8), np.uint16)
    lab[2, 1, 1] = 2
    images, labels = annotated_planes(img, lab, channel_last=True)
    assert len(images) == 1 and images[0].shape == (8, 8, 3)
    np.testing.assert_array_equal(images[0], img[2])
    lab[2, 1, 1] = 0  # painting goes on: the training copy keeps what was painted
    assert labels[0][1, 1] == 2
    with pytest.raises(ValueError, match=r"labels of shape \(3, 8, 8\) do not match im of shape \(3, 8, 8, 3\)"):
        annotated_planes(img, lab, name="im")


def test_first_line_and_cancel():
    assert first_line(OSError("\n  disk full \nerrno 28")) == "disk full"
    assert first_line(RuntimeError("")) == "RuntimeError"
    ev = threading.Event()
    assert not is_cancelled(None) and not is_cancelled(ev) and not is_cancelled(lambda: False)
    check_cancel(ev)
    ev.set()
    assert is_cancelled(ev) and is_cancelled(lambda: True)
    with pytest.raises(Cancelled):
        check_cancel(ev)
