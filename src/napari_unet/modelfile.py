"""Model files: safe, self-describing, written atomically (:func:`save_model`, :func:`load_model`).

A model file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: raw tensors
plus a JSON header. Loading one never executes code (no pickle). The header carries what is
needed to use the weights without guessing: the architecture, the input normalisation, the
class names, post-processing defaults, a format version and where the weights came from.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from .errors import first_line
from .io import atomic_write
from .model import UNet, UNetConfig
from .modelheader import FORMAT_NAME, FORMAT_VERSION, ModelFileError, check_tensor_shapes, read_model_info
from .normalize import Normalization
from .postprocess import PostProcessing
from .segmentation_model import SegmentationModel

__all__ = [
    "SegmentationModel",
    "ModelFileError",
    "save_model",
    "load_model",
    "read_model_info",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

def save_model(model: SegmentationModel, path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
               overwrite: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically (a crash never leaves a half-written file).

    An existing file is replaced only with ``overwrite`` (else
    :class:`~napari_unet.io.OutputExistsError`). ``dtype=torch.float16`` halves the size (used
    for the built-in models); loading always gives float32 weights. Returns the path written.
    """
    from safetensors.torch import save

    from .io import check_output

    bad = [k for k, v in model.network.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the model has NaN or infinite weights (in {bad[0]}): not saved")
    path = check_output(path, overwrite=overwrite)
    header = model.header()
    header["provenance"] = dict(header["provenance"])
    header["provenance"]["saved"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.network.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "model": json.dumps(header)}
    data = save(tensors, metadata=meta)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write, overwrite=overwrite)
    return path


def _load_file(path: Path) -> SegmentationModel:
    from safetensors import safe_open
    from safetensors.torch import load_file

    header = read_model_info(path)
    try:
        config = UNetConfig.from_dict(header["architecture"])
        norm = Normalization.from_dict(header["normalization"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path.name} declares an architecture this napari-unet cannot build: {e}") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {first_line(e)}") from None
    # the declared architecture against the tensors really there, before building anything
    check_tensor_shapes(path, config.to_dict(), shapes)
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {first_line(e)}") from None
    net = UNet(config)
    expected = net.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise ModelFileError(f"{path.name}: the weights do not match the architecture the file declares (corrupt file?)")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelFileError(
            f"{path.name} holds NaN or infinite weights (in {bad[0]}{more}): the file is damaged or its training "
            "diverged; use another model file"
        )
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    net.eval()
    try:
        return SegmentationModel(
            network=net,
            normalization=norm,
            class_names=list(header["class_names"]),
            foreground_class=int(header.get("foreground_class", 1)),
            name=header.get("name") or path.stem,
            description=header.get("description", ""),
            postprocessing=PostProcessing.from_dict(header.get("postprocessing")),
            provenance=dict(header.get("provenance") or {}),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{path.name} has an inconsistent header: {e}") from None


def load_model(name_or_path: str | os.PathLike, *, allow_torchscript: bool = False) -> SegmentationModel:
    """Load a built-in model, a model file or a bioimage.io package.

    Parameters
    ----------
    name_or_path : str or path
        A built-in model's name (``napari-unet models`` lists them, see
        :func:`napari_unet.builtin.list_builtin_models`), a ``.safetensors`` model file, or a
        bioimage.io package (``.zip`` or ``rdf.yaml``, see
        :func:`napari_unet.bioimageio.load_bioimageio`).
    allow_torchscript : bool
        Opt in to packages whose only weights of this U-Net are TorchScript, which is code.
        Model files are read as data (safetensors and a JSON header), never executed.

    Returns
    -------
    SegmentationModel
        The network (on the CPU, float32, eval mode) with its normalisation, class names,
        post-processing and provenance.

    Raises
    ------
    ModelFileError
        With a one-line reason: no such model, not a napari-unet file, damaged file, ...

    Examples
    --------
    >>> model = load_model("fluo-nuclei")
    >>> model.class_names
    ['background', 'nucleus', 'nucleus boundary']
    >>> load_model("no-such-model")
    Traceback (most recent call last):
    ...
    napari_unet.modelheader.ModelFileError: no built-in model or file named 'no-such-model' ...
    """
    from .builtin import builtin_model_path, list_builtin_models

    if name_or_path is None or not str(name_or_path).strip():
        raise ModelFileError("no model given: name a built-in model (napari-unet models) or a model file")
    s = str(name_or_path)
    p = builtin_model_path(s)
    if p is not None:
        return _load_file(p)
    path = Path(s).expanduser()
    if not path.exists():
        names = ", ".join(list_builtin_models()) or "none installed"
        raise ModelFileError(f"no built-in model or file named {s!r} (built-in models: {names})")
    from .bioimageio import is_bioimageio_source, load_bioimageio

    if is_bioimageio_source(path):
        return load_bioimageio(path, allow_torchscript=allow_torchscript)
    return _load_file(path)
