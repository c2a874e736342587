"""Reading a model file's header without torch (fast: for listings and the napari widgets).

A model file is a safetensors file whose metadata holds ``format = "napari-unet"``, a
``format_version`` and the model card as JSON (see :mod:`napari_unet.modelfile`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "read_model_info"]

FORMAT_NAME = "napari-unet"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A model file (or name) that cannot be used; the message says why in one line."""


def _read_header(path: Path) -> dict:
    """The napari-unet header of ``path`` or a one-line :class:`ModelFileError`."""
    from safetensors import safe_open

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
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__})"
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


def read_model_info(path: str | os.PathLike) -> dict:
    """The header of a model file (name, description, architecture, ...) without loading weights."""
    return _read_header(Path(path))




def read_model_info(path: str | os.PathLike) -> dict:
    """The header of a model file (name, description, architecture, ...) without loading weights."""
    return _read_header(Path(path))
