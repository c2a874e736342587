"""Model files: safe, self-describing, written atomically.

A model file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: raw tensors
plus a JSON header. Loading one never executes code (no pickle). The header carries what is
needed to use the weights without guessing: the architecture, the input normalisation, the
class names, post-processing defaults, a format version and where the weights came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .io import atomic_write
from .modelinfo import FORMAT_NAME, FORMAT_VERSION, ModelFileError, _read_header, check_tensor_shapes, read_model_info
from .model import UNet, UNetConfig
from .normalize import Normalization

__all__ = [
    "SegmentationModel",
    "ModelFileError",
    "save_model",
    "load_model",
    "read_model_info",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

@dataclass
class SegmentationModel:
    """A U-Net with everything needed to apply it: normalisation, classes, post-processing.

    ``postprocessing`` holds the defaults used to turn probabilities into instance labels
    (``threshold`` on the foreground probability, optional ``seed_threshold`` for splitting
    touching objects, ``min_size`` in pixels). ``provenance`` says where the weights came from.
    """

    network: UNet
    normalization: Normalization = field(default_factory=Normalization)
    class_names: list[str] = field(default_factory=lambda: ["background", "cell"])
    foreground_class: int = 1
    name: str = "unnamed"
    description: str = ""
    postprocessing: dict = field(default_factory=lambda: {"threshold": 0.5, "seed_threshold": None, "min_size": 0})
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        from .postprocess import check_postprocessing

        self.postprocessing = check_postprocessing(dict(self.postprocessing or {}))
        if len(self.class_names) != self.config.n_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for a network with {self.config.n_classes} classes"
            )
        if not 0 <= self.foreground_class < self.config.n_classes:
            raise ValueError("foreground_class must index one of the classes")

    @property
    def config(self) -> UNetConfig:
        return self.network.config

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @classmethod
    def new(cls, config: UNetConfig | None = None, **kwargs) -> "SegmentationModel":
        """A freshly initialised model (He initialisation); refused before allocating when its
        weights (with gradients and optimiser state, four copies) cannot fit in memory."""
        import math

        from .memory import check_memory
        from .modelinfo import expected_tensor_shapes

        config = config or UNetConfig()
        n = sum(math.prod(s) for s in expected_tensor_shapes(config.to_dict()).values())
        check_memory(16.0 * n, f"a U-Net of depth {config.depth} and width {config.base_channels} ({n:,} weights)",
                     "choose a smaller depth or width (--depth, --base-channels)")
        return cls(network=UNet(config), **kwargs)

    def header(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "architecture": self.config.to_dict(),
            "normalization": self.normalization.to_dict(),
            "class_names": list(self.class_names),
            "foreground_class": self.foreground_class,
            "postprocessing": self.postprocessing,
            "provenance": self.provenance,
        }

    def summary(self) -> str:
        c = self.config
        return (
            f"{self.name}: {self.description or 'no description'}\n"
            f"classes: {', '.join(self.class_names)}; input channels: {c.in_channels}; "
            f"U-Net depth {c.depth}, base {c.base_channels}, {c.padding} padding"
        )


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
    from safetensors.torch import load_file

    from safetensors import safe_open

    header = _read_header(path)
    try:
        config = UNetConfig.from_dict(header["architecture"])
        norm = Normalization.from_dict(header["normalization"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path.name} declares an architecture this napari-unet cannot build: {e}") from None
    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    # the declared architecture against the tensors really there, before building anything
    check_tensor_shapes(path, config.to_dict(), shapes)
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise ModelFileError(f"{path.name} is truncated or corrupt: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
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
            postprocessing=dict(header.get("postprocessing") or {}),
            provenance=dict(header.get("provenance") or {}),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{path.name} has an inconsistent header: {e}") from None


def load_model(name_or_path: str | os.PathLike, *, allow_torchscript: bool = False) -> SegmentationModel:
    """Load a built-in model by name (see :func:`napari_unet.builtin.list_builtin_models`),
    a model file by path, or a bioimage.io package (``.zip`` or ``rdf.yaml``, see
    :func:`napari_unet.bioimageio.load_bioimageio`; ``allow_torchscript`` opts in to packages
    whose only weights of this U-Net are TorchScript, which is code). Raises
    :class:`ModelFileError` with a one-line reason."""
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
