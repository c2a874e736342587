"""napari-unet: the U-Net of Ronneberger, Fischer and Brox (MICCAI 2015) for microscopy.

The engine is plain numpy/torch (no Qt):

>>> from napari_unet import load_model, segment
>>> model = load_model("fluo-nuclei")
>>> result = segment(image, model)          # result.labels, result.probabilities

The napari widgets live in ``napari_unet._widgets``; the command line is ``napari-unet``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_model", "save_model", "segment", "predict_probabilities", "train", "list_builtin_models"]


def __getattr__(name):
    # lazy: importing the package (as napari does for the manifest) must not import torch
    if name in ("load_model", "save_model"):
        from . import modelfile

        return getattr(modelfile, name)
    if name in ("segment", "predict_probabilities"):
        from . import predict

        return getattr(predict, name)
    if name == "train":
        from .train import train

        return train
    if name == "list_builtin_models":
        from .builtin import list_builtin_models

        return list_builtin_models
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
