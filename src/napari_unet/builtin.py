"""The models shipped inside the package (``napari_unet/models/*.safetensors``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["list_builtin_models", "builtin_names", "builtin_model_path", "MODELS_DIR", "DEFAULT_MODEL"]

MODELS_DIR = Path(__file__).parent / "models"

#: the general-purpose model: listed first, and used when no model was chosen
DEFAULT_MODEL = "fluo-nuclei"


def builtin_names() -> list[str]:
    """Names of the built-in models, :data:`DEFAULT_MODEL` first, then by name; found without
    reading a file (nor importing torch)."""
    names = sorted(p.stem for p in MODELS_DIR.glob("*.safetensors"))
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def builtin_model_path(name: str) -> Path | None:
    """Path of the built-in model ``name``, or None if there is none of that name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    p = MODELS_DIR / f"{name}.safetensors"
    return p if p.is_file() else None


def list_builtin_models() -> dict[str, str]:
    """``{name: one-line description}`` of the built-in models, in :func:`builtin_names` order
    (a file whose header cannot be read is left out)."""
    from .modelheader import ModelFileError, read_model_info

    out = {}
    for name in builtin_names():
        try:
            info = read_model_info(MODELS_DIR / f"{name}.safetensors")
        except ModelFileError:
            continue
        out[name] = " ".join(str(info.get("description", "")).split())
    return out
