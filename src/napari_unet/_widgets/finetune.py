"""Annotate and fine-tune section: paint a few cells, train from the painted pixels only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, cast

import napari.layers
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, SpinBox, create_widget

from ._annotations import CONVENTION, background, new_cell, plane_pairs
from ._jobs import Job
from ._layers import (
    KEY,
    Overwrite,
    folder_for,
    form,
    layer_id,
    plane_shape,
    plugin_metadata,
    reason,
    show_status,
    source_of,
    text_line,
)
from ._plot import TrainingPlot
from ._progress import ProgressRow
from ._session import session
from .segment import segment_layer

if TYPE_CHECKING:
    import napari.viewer

STROKE_ITERATIONS, STROKE_LEARNING_RATE = 150, 1e-4
RATES = [("1e-2", 1e-2), ("3e-3", 3e-3), ("1e-3", 1e-3), ("3e-4", 3e-4), ("1e-4", 1e-4), ("3e-5", 3e-5)]


def annotation_warnings(labels: list) -> list[str]:
    """Plain-words warnings about the painted labels (one class only, no background, ...) from
    :func:`napari_unet.train.check_annotations` when this version of the engine has it."""
    from napari_unet import train

    check = getattr(train, "check_annotations", None)
    return list(check(labels)) if check is not None else []


class FinetuneWidget(Container):
    def __init__(self, viewer: napari.viewer.Viewer, progress: ProgressRow | None = None):
        super().__init__(labels=False)
        self._viewer = viewer
        self.job: Job | None = None
        self.result = None  # the last TrainingResult
        self._overwrite = Overwrite()
        self._image = cast(ComboBox, create_widget(label="Image", annotation="napari.layers.Image"))
        self._new = PushButton(text="New annotation layer for this image")
        self._annotations = cast(ComboBox, create_widget(label="Annotations", annotation="napari.layers.Labels"))
        convention = text_line(CONVENTION)
        self._bg = PushButton(text="Background (1)")
        self._cell = PushButton(text="New cell (M)")
        paint = Container(widgets=[self._bg, self._cell], layout="horizontal", labels=False)
        optional_labels = Optional[napari.layers.Labels]  # noqa: UP045 (magicgui reads it at runtime)
        self._valid = cast(ComboBox, create_widget(label="Validate on", annotation=optional_labels, value=None))
        # the defaults measured for strokes (train.STROKE_DEFAULTS, docs/training.md; here without
        # importing torch, and a test keeps the two equal)
        self._iterations = SpinBox(label="Iterations", value=STROKE_ITERATIONS, min=1, max=100_000, step=50)
        self._lr = ComboBox(label="Learning rate", choices=RATES, value=STROKE_LEARNING_RATE)
        self._tile = SpinBox(label="Tile (px)", value=252, min=92, max=1024, step=16,
                             tooltip="training tile edge; smaller is faster on a CPU")
        self._train = PushButton(text="Fine-tune")
        self._warnings = text_line("")
        self._warnings.native.setStyleSheet("color: #e3b341")
        self._warnings.visible = False
        self._status = text_line("")
        self._path = FileEdit(label="Save to", mode="w", filter="napari-unet model (*.safetensors)")
        self._save = PushButton(text="Save fine-tuned model", enabled=False)
        self.extend([form(self._image, self._new, self._annotations), convention, paint,
                     form(self._valid, self._iterations, self._lr, self._tile), self._train, self._warnings,
                     self._status])
        from napari.utils.theme import get_theme

        self._plot = TrainingPlot(get_theme(viewer.theme).text.as_hex())
        self._plot.setVisible(False)  # shown from the first fine-tuning on
        self.extend([form(self._path), self._save])
        # under the status line, above "Save to" (magicgui's extend does not count it: insert it last)
        layout = self.native.layout()
        layout.insertWidget(layout.indexOf(self._status.native) + 1, self._plot)
        self.progress = progress
        if progress is None:  # on its own (not in the panel): its own progress row
            self.progress = ProgressRow()
            self.native.layout().addWidget(self.progress)
        self._new.changed.connect(self.new_annotation_layer)
        self._bg.changed.connect(lambda: self._annotations.value is not None and background(self._annotations.value))
        self._cell.changed.connect(lambda: self._annotations.value is not None and new_cell(self._annotations.value))
        self._train.changed.connect(self.run)
        self._save.changed.connect(self.save)
        self._path.changed.connect(lambda: setattr(self._overwrite, "pending", None))

    # ------------------------------------------------------------------ annotating
    def new_annotation_layer(self):
        image = self._image.value
        if image is None:
            show_status(self._status, "Open or choose an image layer first", error=True)
            return None
        layer = self._viewer.add_labels(
            np.zeros(plane_shape(image), dtype=np.uint16), name=f"{image.name} annotations",
            scale=tuple(image.scale), translate=tuple(image.translate),
            metadata={KEY: {"role": "annotations", "source": layer_id(image)}},
        )
        layer.brush_size = max(3, min(plane_shape(image)[-2:]) // 60)
        layer.bind_key("m", new_cell, overwrite=True)
        new_cell(layer)
        self._annotations.reset_choices()
        if layer in self._annotations.choices:  # (not when the widget is not docked in the viewer)
            self._annotations.value = layer
        self._viewer.layers.selection.active = layer
        return layer

    def _training_data(self):
        """Training images/labels from the chosen annotations and every annotation layer made
        here whose image is still open; validation pairs from "Validate on"."""
        chosen, valid = self._annotations.value, self._valid.value
        layers = [lyr for lyr in self._viewer.layers if plugin_metadata(lyr).get("role") == "annotations"]
        if chosen is not None and chosen not in layers:
            layers.insert(0, chosen)
        images, labels, rgb = [], [], set()
        for lab in layers + ([valid] if valid is not None else []):
            if plugin_metadata(lab).get("role") == "labels":
                raise ValueError(f"{lab.name!r} holds segmentation results (0 = background), not annotations "
                                 "(0 = not annotated, 1 = background, 2.. = cells): make an annotation layer")
        for lab in layers:
            if lab is valid:
                continue
            img = source_of(self._viewer, lab) or (self._image.value if lab is chosen else None)
            if img is None:
                continue
            ims, lbs = plane_pairs(img, lab.data)
            images += ims
            labels += lbs
            rgb.add(bool(img.rgb) if ims else None)
        validation = []
        if valid is not None:
            img = source_of(self._viewer, valid) or self._image.value
            validation = list(zip(*plane_pairs(img, valid.data), strict=True))
        rgb.discard(None)
        if len(rgb) > 1:
            raise ValueError("mix of colour and grey images: fine-tune on one kind at a time")
        return images, labels, validation, (-1 if rgb == {True} else None)

    # ------------------------------------------------------------------ training
    def run(self) -> None:
        if self.job is not None and self.job.running:
            return
        try:
            images, labels, validation, channel_axis = self._training_data()
        except ValueError as e:
            show_status(self._status, str(e), error=True)
            return
        if not images:
            show_status(self._status, "Nothing painted yet: create an annotation layer and paint background (1) "
                                      "and a few cells (2, 3, ...)", error=True)
            return
        self._warnings.value = ""
        self._warn(annotation_warnings(labels))
        n, lr, tile, device = self._iterations.value, self._lr.value, self._tile.value, session.device
        source = {}
        painted = sum(int((lb > 0).sum()) for lb in labels)
        cells = sum(int(np.unique(lb[lb > 1]).size) for lb in labels)
        self._painted = (len(images), painted, cells)

        def work(report, cancelled):
            from napari_unet.train import TrainingConfig, train

            model, source["name"] = session.get_model()
            cfg = TrainingConfig(iterations=n, learning_rate=lr, tile=tile, device=device,
                                 validate_every=max(1, n // 5))
            return train(model, images, labels, cfg, validation=validation, callback=report,
                         cancel=cancelled, channel_axis=channel_axis)

        self._plot.reset()
        self._plot.setVisible(True)
        self._train.enabled = False
        show_status(self._status, f"Fine-tuning on {len(images)} image(s): {painted} painted pixels, {cells} cells ...")

        def trained(res):
            self._trained(res, source.get("name", ""))

        self.job = Job(
            work, desc="Fine-tuning", count=lambda p: (p.iteration, p.iterations),
            on_progress=self._iteration, on_returned=trained,
            on_error=lambda exc: show_status(self._status, f"Fine-tuning failed: {reason(exc)}", error=True),
            on_finished=self._finished, keep_cancelled_result=True, owner=self.native, view=self.progress,
            on_warning=lambda text: self._warn([text]),
        )

    def _warn(self, warnings: list[str]) -> None:
        """Add ``warnings`` (once each) to the yellow lines above the status."""
        shown = self._warnings.value
        new = [f"⚠ {w}" for w in warnings if w not in shown]
        self._warnings.value = "<br>".join(filter(None, [shown] + new))
        self._warnings.visible = bool(self._warnings.value)

    def _iteration(self, p) -> None:
        self._plot.add(p)
        self.job.set_description(f"Fine-tuning: iteration {p.iteration} of {p.iterations}")

    def _trained(self, result, source: str) -> None:
        self.result = result
        h = result.history
        if not h:
            show_status(self._status, "Cancelled before the first iteration: the model is unchanged")
            return
        model = result.model
        start_name = model.name
        start = source.removesuffix(" fine-tuned")
        if result.kept_start:  # nothing beat the start model: it stays current, unchanged, under its own name
            self._warn(result.warnings)
            session.set_model(model, source)
            show_status(self._status, f"Kept {source} unchanged: none of {len(h)} fine-tuned iterations beat it "
                                      f"on the {result.scored_on or 'held-out strokes'}; its segmentation stands.")
            return
        if not model.name.endswith("-finetuned"):
            model.name = f"{model.name}-finetuned"
        if not model.provenance.get("fine_tuned"):  # train() describes what it fine-tuned; else say it here
            n_images, painted, cells = self._painted
            marker = ". Started from "
            if model.description.startswith(f"{start} fine-tuned in napari") and marker in model.description:
                origin = model.description.split(marker, 1)[1]  # fine-tuned again: keep where it began
            else:
                origin = f"{start_name}: {model.description}".strip()
            model.description = (f"{start} fine-tuned in napari on {n_images} image(s) ({cells} painted cells, "
                                 f"{painted} painted pixels), {len(h)} iteration{'s' * (len(h) != 1)}{marker}"
                                 f"{origin}")
        self._warn(result.warnings)
        session.set_model(model, start + " fine-tuned")
        how = f"cancelled after {len(h)} iterations, keeping" if result.cancelled else f"{len(h)} iterations,"
        k = max(1, len(h) // 10)  # loss averaged over the first and the last tenth
        summary = (f"Fine-tuned ({how} the model of iteration {result.best_iteration}); loss "
                   f"{np.mean([p.loss for p in h[:k]]):.3f} → {np.mean([p.loss for p in h[-k:]]):.3f}")
        scores = [p.validation_score for p in h if p.validation_score is not None]
        checked = result.check_words()  # judged against the start model: on what, and both scores
        summary += f". {checked}" if checked else f", best validation score {max(scores):.2f}." if scores else "."
        summary += "".join(f" {w}" for w in result.warnings)  # what to paint, start model kept
        self._save.enabled = True
        if not str(self._path.value) or str(self._path.value) == ".":
            self._path.value = folder_for(self._viewer, self._image.value) / f"{model.name}.safetensors"
        image = self._image.value
        if image is None:
            show_status(self._status, summary)
            return
        show_status(self._status, f"{summary} Segmenting {image.name} again ...")

        def resegmented():
            if self.job.outcome == "returned":
                show_status(self._status, f"{summary} {self._status.value}")
            self._finished()

        self.job = segment_layer(self._viewer, image, status=self._status, on_finished=resegmented,
                                 owner=self.native, view=self.progress)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    def _finished(self) -> None:
        self._plot.redraw()
        if self.job is None or not self.job.running:  # (the re-segmentation may still run)
            self._train.enabled = True

    def save(self) -> None:
        if self.result is None:
            return
        path = Path(self._path.value)
        if path.suffix.lower() != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        existed = path.exists()  # replaced only after the user said so (io refuses otherwise)
        if not self._overwrite.allowed(path, self._status, "Save fine-tuned model"):
            return
        try:
            from napari_unet.modelfile import save_model

            save_model(self.result.model, path, overwrite=existed)
        except (OSError, ValueError) as e:
            show_status(self._status, f"Could not save the model: {reason(e)}", error=True)
            return
        show_status(self._status, f"Model saved to {path}")
