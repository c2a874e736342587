"""The models shipped inside the package (``napari_unet/models/*.safetensors``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["list_builtin_models", "builtin_model_path", "MODELS_DIR"]

MODELS_DIR = Path(__file__).parent / "models"


def builtin_model_path(name: str) -> Path | None:
    """Path of the built-in model ``name``, or None if there is none of that name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    p = MODELS_DIR / f"{name}.safetensors"
    return p if p.is_file() else None


def list_builtin_models() -> dict[str, str]:
    """``{name: one-line description}`` of the built-in models, sorted by name."""
    from .modelinfo import ModelFileError, read_model_info

    out = {}
    for p in sorted(MODELS_DIR.glob("*.safetensors")):
        try:
            info = read_model_info(p)
        except ModelFileError:
            continue
        out[p.stem] = " ".join(str(info.get("description", "")).split())
    return out
