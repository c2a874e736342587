"""Plain-words messages about model files (what is wrong and what to do, in one line)."""

from __future__ import annotations

from pathlib import Path

FORMAT_HINT = "Open a .safetensors file saved by napari-unet (Save fine-tuned model, napari-unet train)"


def kind_of_file(path) -> str:
    """``"model"`` (a napari-unet header), ``"other-weights"`` (a readable safetensors file of
    another program), ``"unreadable"`` (damaged, cut short, not safetensors), ``"missing"``."""
    p = Path(path)
    if not p.is_file():
        return "missing"
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception:  # safetensors raises its own error types for bad headers
        return "unreadable"
    return "model" if meta.get("format") == "napari-unet" else "other-weights"


def model_file_problem(path, exc: BaseException | None = None) -> str:
    """One line saying why ``path`` cannot be used as a model (``exc``: the error raised when
    loading it, for files that are napari-unet models)."""
    p = Path(str(path))
    kind = kind_of_file(p)
    if kind == "missing":
        return f"{p.name}: no such file" if not p.is_dir() else f"{p.name} is a folder, not a model file"
    if kind == "unreadable":
        return (f"{p.name} is not a napari-unet model: the file is damaged, cut short, or not a "
                f"safetensors file at all. {FORMAT_HINT}.")
    if kind == "other-weights":
        return (f"{p.name} holds weights saved by another program, not a napari-unet model. "
                f"{FORMAT_HINT}.")
    from ._layers import reason

    detail = reason(exc) if exc is not None else "it cannot be read"
    return f"{p.name} is a napari-unet model but cannot be used: {detail}"
