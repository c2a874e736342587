"""Opening a model file (``*.safetensors``) in napari makes it the current model.

A model is not a layer: the reader loads it into the widgets' shared session and returns
napari's "nothing to add" value ``[(None,)]``. Safetensors files that are not napari-unet
models are left to other readers.
"""

from __future__ import annotations

from napari.utils.notifications import show_info


def get_reader(path):
    if isinstance(path, (list, tuple)) or not str(path).lower().endswith(".safetensors"):
        return None
    from napari_unet.modelinfo import ModelFileError, read_model_info

    try:
        read_model_info(path)
    except ModelFileError:
        return None
    return read_model


def read_model(path):
    from napari_unet.modelfile import load_model

    from ._widgets._session import session

    model = load_model(path)
    session.set_model(model, str(path))
    show_info(f"napari-unet: {model.name} is now the current model (open the Model widget for details)")
    return [(None,)]
