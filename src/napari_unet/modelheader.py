"""A model file's header, read without torch (fast: for listings and the napari widgets), and
the tensor shapes its declared architecture needs.

A model file is a safetensors file whose metadata holds ``format = "napari-unet"``, a
``format_version`` and the model card as JSON (see :mod:`napari_unet.modelfile`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "read_model_info", "expected_tensor_shapes",
           "check_tensor_shapes"]

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file (or name) that cannot be used; the message says why in one line."""


def read_model_info(path: str | os.PathLike) -> dict:
    """The header of a model file (name, description, architecture, ...) without loading its
    weights, or a one-line :class:`ModelFileError`."""
    from safetensors import safe_open

    from .errors import first_line

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise ModelFileError(
            f"{path.name} is not a readable napari-unet model file (not safetensors, or corrupt/truncated: "
            f"{first_line(e)})"
        ) from None
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path.name} is a safetensors file but not a napari-unet model (no napari-unet header)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{path.name} has an unreadable format version") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path.name} was written in model format {version} by a newer napari-unet; this one reads up to "
            f"format {FORMAT_VERSION}: upgrade napari-unet"
        )
    try:
        return json.loads(meta["model"])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{path.name} has a damaged napari-unet header") from None


def expected_tensor_shapes(architecture: dict) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of :class:`napari_unet.model.UNet` for a header's
    ``architecture``, by arithmetic only (nothing is allocated, whatever the numbers)."""
    a = {"in_channels": 1, "n_classes": 2, "depth": 5, "base_channels": 64, **architecture}
    depth, base, cin, k = int(a["depth"]), int(a["base_channels"]), int(a["in_channels"]), int(a["n_classes"])
    if a.get("keep_linear"):  # the first convolution sees each channel linear and compressed
        cin *= 2
    shapes: dict[str, tuple[int, ...]] = {}

    def double(prefix, c_in, c_out):
        shapes[f"{prefix}.0.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{prefix}.0.bias"] = (c_out,)
        shapes[f"{prefix}.2.weight"] = (c_out, c_out, 3, 3)
        shapes[f"{prefix}.2.bias"] = (c_out,)

    widths = [base * 2**i for i in range(depth)]
    for i, w in enumerate(widths):
        double(f"down.{i}", cin, w)
        cin = w
    for j, w in enumerate(reversed(widths[:-1])):
        shapes[f"upconv.{j}.weight"] = (cin, w, 2, 2)
        shapes[f"upconv.{j}.bias"] = (w,)
        double(f"up.{j}", 2 * w, w)
        cin = w
    shapes["head.weight"] = (k, cin, 1, 1)
    shapes["head.bias"] = (k,)
    return shapes


def check_tensor_shapes(path: Path, architecture: dict, shapes: dict) -> None:
    """Compare the architecture a header declares with the tensors the file really holds
    (``shapes``: name -> shape, from the safetensors header), before anything is built, so that
    a crafted header (depth 200, width 100000) cannot make napari-unet allocate gigabytes."""
    depth = architecture.get("depth", 5) if isinstance(architecture, dict) else None
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 2 * len(shapes) + 1:
        raise ModelFileError(f"{path.name} declares a network of depth {depth!r}, but holds {len(shapes)} tensors "
                             "(corrupt or crafted file)")
    try:
        expected = expected_tensor_shapes(architecture)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{path.name} declares an architecture this napari-unet cannot build: {e}") from None
    if set(expected) != set(shapes):
        raise ModelFileError(f"{path.name}: its tensors are not those of the architecture it declares "
                             f"(depth {depth}; corrupt or crafted file)")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise ModelFileError(f"{path.name}: tensor {name} is {tuple(shapes[name])} but the declared architecture "
                                 f"needs {shape} (corrupt or crafted file)")
