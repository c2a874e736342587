"""Small real images shipped with the package (sources and licences in README.md here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SAMPLES", "sample_path", "sample_image"]

_HERE = Path(__file__).parent

SAMPLES = {
    "nuclei": {
        "file": "nuclei.tif",
        "title": "Fluorescence nuclei (DSB2018)",
        "source": "Data Science Bowl 2018 stage 1 train (BBBC038), image 3ebd2ab3..., CC0",
        "model": "fluo-nuclei",
    },
    "em": {
        "file": "em.tif",
        "title": "EM neuron membranes (ISBI 2012)",
        "source": "ISBI 2012 EM segmentation challenge, training slice 22 (zhixuhao/unet, MIT)",
        "model": "em-membranes",
    },
}


def sample_path(name: str) -> Path:
    """Path of the sample image ``name`` (``"nuclei"`` or ``"em"``)."""
    if name not in SAMPLES:
        raise KeyError(f"no sample named {name!r}; samples: {', '.join(SAMPLES)}")
    return _HERE / SAMPLES[name]["file"]


def sample_image(name: str) -> np.ndarray:
    """The sample image ``name`` as a numpy array."""
    import tifffile

    return tifffile.imread(sample_path(name))
