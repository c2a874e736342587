"""Fixtures for the widget tests (tests/test_widgets*.py). Imports stay inside the fixtures
so that the core tests do not need napari."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import DATA  # the one data folder constant


@pytest.fixture
def session():
    """The widgets' shared session, emptied before and after the test."""
    from napari_unet._widgets._session import session

    session.reset()
    yield session
    session.reset()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A small, fast, untrained two-class model saved as a model file."""
    from _helpers import tiny_model

    from napari_unet.modelfile import save_model

    return save_model(tiny_model(), tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture
def tiny_model(tiny_model_file):
    from napari_unet.modelfile import load_model

    return load_model(tiny_model_file)


@pytest.fixture
def builtin_nuclei():
    """The built-in ``fluo-nuclei`` model, or skip."""
    from napari_unet.builtin import builtin_model_path

    if builtin_model_path("fluo-nuclei") is None:
        pytest.skip("built-in model fluo-nuclei is not installed yet (src/napari_unet/models/)")
    from napari_unet.modelfile import load_model

    return load_model("fluo-nuclei")


@pytest.fixture
def nuclei_image() -> np.ndarray:
    """A real fluorescence nuclei image: the packaged sample, else the shared data folder."""
    try:
        from napari_unet.samples import sample_image

        return sample_image("nuclei")
    except (ImportError, KeyError, OSError):
        path = DATA / "stardist_dsb2018_sample" / "images" / "img2d.tif"
        if not path.is_file():
            pytest.skip(f"no real nuclei image: no packaged sample and {path} is absent")
        import tifffile

        return tifffile.imread(path)


@pytest.fixture
def blobs():
    """A synthetic 2D image of 9 bright disks and the convention labels of 4 of them painted
    (1 = background ring around each, 2.. = cells), the rest left unannotated (0)."""
    from _helpers import blobs as make_blobs

    centres = [(cy, cx) for cy in (30, 80, 130) for cx in (30, 80, 130)]
    image, cells = make_blobs((160, 160), centres, 14, background=20, noise=5, brightness=100)
    _, rings = make_blobs((160, 160), centres, 21)
    labels = np.zeros(image.shape, np.uint16)
    for k, (cy, cx) in enumerate([(30, 30), (30, 80), (80, 30), (80, 80)]):  # 4 painted, with a background ring
        i = centres.index((cy, cx)) + 1
        labels[rings == i] = 1
        labels[cells == i] = k + 2
    return image, labels


@pytest.fixture
def slow_forward(monkeypatch):
    """Make a model's forward pass take at least ``delay`` seconds (so a job can be cancelled
    midway on any machine)."""
    import time

    def apply(model, delay=0.2):
        net = model.network
        forward = net.forward

        def slow(x):
            time.sleep(delay)
            return forward(x)

        monkeypatch.setattr(net, "forward", slow)
        return model

    return apply
