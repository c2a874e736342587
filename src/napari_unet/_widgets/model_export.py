"""Export model...: write the current model as a bioimage.io model package (a zip), in the
background. The core function is :func:`napari_unet.bioimageio.export_bioimageio`."""

from __future__ import annotations

from pathlib import Path

from ._jobs import Job
from ._layers import image_data, reason, show_status
from ._session import builtin_names, session

ZIP_FILTER = "bioimage.io model package (*.zip)"


def ask_path(parent, suggested: Path) -> Path | None:
    """A save dialog (which asks before replacing a file); None if cancelled."""
    from qtpy.QtWidgets import QFileDialog

    chosen, _ = QFileDialog.getSaveFileName(parent, "Export model as a bioimage.io package", str(suggested), ZIP_FILTER)
    if not chosen:
        return None
    path = Path(chosen)
    return path if path.suffix.lower() == ".zip" else path.with_name(path.name + ".zip")


def ask_authors(parent, suggested: str) -> list[str] | None:
    """Who made the model, comma-separated (bioimage.io lists them); None if cancelled."""
    from qtpy.QtWidgets import QInputDialog

    text, ok = QInputDialog.getText(parent, "Export model", "Authors (comma-separated):", text=suggested)
    if not ok:
        return None
    return [a.strip() for a in text.split(",") if a.strip()]


def export_current_model(viewer, status, owner) -> Job | None:
    """Ask where and who made it, then export the current model; the outcome goes to
    ``status``. A model with several channels takes its test image from the selected image
    layer."""
    import napari.layers

    model = session.model
    if model is None:
        show_status(status, "Load a model first", error=True)
        return None
    path = ask_path(owner, Path.home() / f"{model.name}.zip")
    if path is None:
        return None
    builtin = session.source in builtin_names()
    authors = ask_authors(owner, "napari-unet developers" if builtin else "")
    if authors is None:
        return None
    test_image = None
    active = viewer.layers.selection.active
    if model.in_channels > 1 and isinstance(active, napari.layers.Image):
        test_image = image_data(active)[0]
    show_status(status, f"Exporting {model.name} to {path.name} ...")

    def work(report, cancelled):
        from napari_unet.bioimageio import export_bioimageio

        # the dialog has asked before replacing an existing file
        return export_bioimageio(model, path, overwrite=True, test_image=test_image, builtin=builtin,
                                 authors=authors)

    return Job(
        work, desc=f"Exporting {model.name}",
        on_returned=lambda p: show_status(status, f"Exported {model.name} to {p} (bioimage.io model package)"),
        on_error=lambda exc: show_status(status, f"Could not export the model: {reason(exc)}", error=True),
        owner=owner,
    )
