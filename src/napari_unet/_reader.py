"""Opening a model file (``*.safetensors``) in napari makes it the current model.

A model is not a layer: the reader loads it into the panel's shared session and returns
napari's "nothing to add" value ``[(None,)]``. A ``.safetensors`` file that is not a
napari-unet model is declined (``None``) when another installed reader could open it, so
that napari tries that one; when napari-unet is the only reader for it, the user gets one
line in plain words (instead of napari's "refused the file" error).
"""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info

PLUGIN = "napari-unet"


def _other_readers(path: str) -> list[str]:
    try:
        from npe2 import PluginManager

        return [r.plugin_name for r in PluginManager.instance().iter_compatible_readers([path])
                if r.plugin_name != PLUGIN]
    except Exception:  # an npe2 without this API: behave as if we were the only reader
        return []


def get_reader(path):
    if isinstance(path, (list, tuple)) or not str(path).lower().endswith(".safetensors"):
        return None
    from ._widgets._words import kind_of_file

    if kind_of_file(path) != "model" and _other_readers(str(path)):
        return None
    return read_model


def read_model(path):
    """Make the model file ``path`` the current model; a one-line message when it cannot be."""
    from ._widgets._session import session
    from ._widgets._words import kind_of_file, model_file_problem

    if kind_of_file(path) != "model":
        show_error(f"napari-unet: {model_file_problem(path)}")
        return [(None,)]
    try:
        from napari_unet.modelfile import load_model

        model = load_model(path)
    except Exception as e:  # a damaged model: say so in one line, keep the current model
        show_error(f"napari-unet: {model_file_problem(path, e)}")
        return [(None,)]
    session.set_model(model, str(path))
    show_info(f"napari-unet: {model.name} is now the current model (see the Model section of the U-Net panel)")
    return [(None,)]
