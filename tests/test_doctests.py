"""The Examples in the public API's docstrings run (numpydoc style, as scikit-image does)."""

import doctest
import importlib

import pytest

MODULES = [
    "napari_unet.weightmap",
    "napari_unet.modelfile",
    "napari_unet.predict",
    "napari_unet.postprocess",
    "napari_unet.dask_predict",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
