"""Segment section: run the current model on an image layer in the background."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox, create_widget

from ._jobs import Job
from ._layers import (
    add_or_update_layer,
    find_plugin_layers,
    form,
    image_data,
    plane_shape,
    reason,
    show_status,
    text_line,
)
from ._progress import ProgressRow
from ._session import builtin_names, session

if TYPE_CHECKING:
    import napari.viewer

SAMPLE_KEY = "napari_unet_sample"


def count_objects(labels: np.ndarray) -> str:
    """``"57 objects"`` for a plane; for a stack, per plane (ids are unique over the stack,
    so the largest id is not a count per plane): ``"812 objects in 8 planes (90 to 112 per plane)"``."""
    labels = np.asarray(labels)
    if labels.ndim <= 2:
        n = int(np.unique(labels[labels > 0]).size) if labels.any() else 0
        return f"{n} object{'s' * (n != 1)}"
    planes = labels.reshape((-1,) + labels.shape[-2:])
    per = [int(np.unique(p[p > 0]).size) if p.any() else 0 for p in planes]
    total = sum(per)
    spread = f"{min(per)} per plane" if min(per) == max(per) else f"{min(per)} to {max(per)} per plane"
    return f"{total} object{'s' * (total != 1)} in {len(per)} planes ({spread})"


def segment_layer(viewer, layer, *, all_classes: bool = False, tta: bool = False, scales="auto", postprocessing=None,
                  status=None, on_finished=None, owner=None, view=None) -> Job:
    """Segment image ``layer`` with the current model (the default built-in one if none was
    chosen) into the layers "<image> <class> probability" (the foreground class, or every
    class with ``all_classes``) and "<image> labels" (updated, not duplicated, on a second
    run). A three-class model's foreground layer is interior + boundary. ``tta`` averages the
    8 rotations/flips, ``scales`` the image shown at these magnifications ("auto": also at
    0.7x where the network is surer, :func:`~napari_unet.predict.predict_probabilities`); ``postprocessing``
    (a dict) overrides settings of the model's :class:`~napari_unet.postprocess.PostProcessing`. A multiscale or large lazy (dask/zarr) layer is segmented block by block
    to disk instead (see ``large.py``). Returns the running :class:`Job`."""
    from .large import is_out_of_core, segment_layer_out_of_core

    if is_out_of_core(layer.data, layer.multiscale):
        return segment_layer_out_of_core(viewer, layer, status=status, on_finished=on_finished, owner=owner,
                                         view=view)
    data, channel_axis = image_data(layer)
    device, name = session.device, layer.name
    n_planes = math.prod(plane_shape(layer)[:-2])

    def work(report, cancelled):
        from napari_unet.predict import segment

        model, source = session.get_model()
        seg = segment(np.asarray(data), model, channel_axis=channel_axis, device=device, tta=tta,
                      scales=scales, progress=lambda done, total: report((done, total)), cancel=cancelled,
                      **(postprocessing or {}))
        return model, source, seg

    def progress(value):
        done, total = value
        if n_planes > 1 and total:
            plane = min(n_planes, done * n_planes // total + 1)
            job.set_description(f"Segmenting {name}: plane {plane} of {n_planes}")

    def returned(result):
        model, source, seg = result
        if session.model is None:
            session.set_model(model, source)
        from napari_unet.predict import foreground_probability

        fg = model.foreground_class
        names = model.class_names
        if len(names) == 3:  # background / interior / boundary: the foreground is two classes
            parts = [(names[fg], foreground_probability(seg.probabilities, model), True)]
            if all_classes:
                parts += [(f"{names[k]} class", seg.probabilities[k], False) for k in range(3)]
        else:
            parts = [(names[k], seg.probabilities[k], k == fg) for k in range(len(names)) if all_classes or k == fg]
        wanted = [part for part, _, _ in parts]
        for lyr in find_plugin_layers(viewer, "probabilities", source=layer):
            if lyr.metadata["napari_unet"].get("part") not in wanted:
                viewer.layers.remove(lyr)  # from an earlier run: other classes or another model
        for part, data_k, visible in parts:
            add_or_update_layer(viewer, "image", data_k, role="probabilities", source=layer, part=part,
                                name=f"{name} {part} probability", colormap="magma", contrast_limits=(0.0, 1.0),
                                blending="additive", opacity=0.6, visible=visible)
        add_or_update_layer(viewer, "labels", seg.labels, role="labels", source=layer, name=f"{name} labels")
        message = f"{name}: {count_objects(seg.labels)} found with {model.name}"
        show_status(status, message)
        session.segmented.emit(message)

    job = Job(
        work, desc=f"Segmenting {name}", on_progress=progress, on_returned=returned,
        on_error=lambda exc: show_status(status, f"Segmentation failed: {reason(exc)}", error=True),
        on_cancelled=lambda: show_status(status, f"Segmentation of {name} cancelled: no layer added"),
        on_finished=on_finished, owner=owner, view=view,
    )
    return job


def _model_postprocessing():
    """The current model's post-processing settings (the default built-in model's header when
    none is loaded yet: read without torch)."""
    from napari_unet.postprocess import PostProcessing

    if session.model is not None:
        return session.model.postprocessing
    names = builtin_names()
    if names:
        from napari_unet.builtin import builtin_model_path
        from napari_unet.modelheader import ModelFileError, read_model_info

        try:
            return PostProcessing.from_dict(read_model_info(builtin_model_path(names[0])).get("postprocessing"))
        except (ModelFileError, ValueError):
            pass
    return PostProcessing()


class LabellingSettings(Container):
    """The model's post-processing, adjustable for this image (shown on demand: two compact rows)."""

    def __init__(self):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self.show = CheckBox(text="Adjust labelling (threshold, split, size)", value=False,
                             tooltip="change how probabilities become objects for the next Segment; "
                                     "the model's own settings are shown")
        self.threshold = FloatSpinBox(label="Threshold", min=0.0, max=1.0, step=0.05,
                                      tooltip="foreground probability above which a pixel is in an object")
        self.seed = FloatSpinBox(label="Split", min=0.0, max=1.0, step=0.05,
                                 tooltip="split touching objects from their cores above this probability (off: no split)")
        self.seed.native.setSpecialValueText("off")
        self.min_size = SpinBox(label="Min size", min=0, max=10**6, tooltip="remove objects with fewer pixels")
        self.smooth = FloatSpinBox(label="Smooth", min=0.0, max=20.0, step=0.5,
                                   tooltip="blur the probabilities by this many pixels first")
        self.fill_holes = CheckBox(text="Fill holes", tooltip="fill holes inside objects")
        rows = [Container(widgets=w, layout="horizontal", labels=True)
                for w in ([self.threshold, self.seed], [self.min_size, self.smooth, self.fill_holes])]
        for r in rows:
            r.margins = (0, 0, 0, 0)
        self.rows = Container(widgets=rows, labels=False, visible=False)
        self.rows.margins = (0, 0, 0, 0)
        self.extend([self.show, self.rows])
        self.show.changed.connect(lambda on: setattr(self.rows, "visible", bool(on)))
        self._shown = None
        self.load()

    def load(self, *_) -> None:
        """Show the current model's settings."""
        p = self._shown = _model_postprocessing()
        self.threshold.value, self.seed.value = p.threshold, p.seed_threshold or 0.0
        self.min_size.value, self.smooth.value, self.fill_holes.value = p.min_size, p.smooth, p.fill_holes

    def overrides(self) -> dict:
        """The settings changed from the model's (none while the settings are hidden)."""
        if not self.show.value or self._shown is None:
            return {}
        # "off" is 0: no core above it is smaller than the object, so nothing is split
        now = dict(threshold=self.threshold.value, seed_threshold=self.seed.value, min_size=int(self.min_size.value),
                   smooth=self.smooth.value, fill_holes=bool(self.fill_holes.value))
        was = self._shown.to_dict()
        was["seed_threshold"] = was["seed_threshold"] or 0.0
        return {k: v for k, v in now.items()
                if (abs(v - round(was[k], 2)) > 1e-9 if isinstance(v, float) else v != was[k])}


class SegmentWidget(Container):
    """Choose an image layer, press Segment; Cancel (beside the progress bar) stops within a tile."""

    def __init__(self, viewer: napari.viewer.Viewer, progress: ProgressRow | None = None):
        super().__init__(labels=False)
        self._viewer = viewer
        self.job: Job | None = None
        self._image = cast(ComboBox, create_widget(label="Image", annotation="napari.layers.Image"))
        self._all = CheckBox(text="Every class as its own layer", value=False,
                             tooltip="also add the probability of the other classes (e.g. background), one "
                                     "layer per class, hidden; else only the foreground class")
        self._tta = CheckBox(text="Average 8 rotations/flips (8x slower)", value=False,
                             tooltip="test-time augmentation: a little more accurate on some images, "
                                     "eight times the time (docs/models.md)")
        self._scales = CheckBox(text="Also at 0.7x size, where surer (1.4x time)", value=True,
                                tooltip="also segments the image at 0.7x magnification and averages the two "
                                        "where that makes the network surer: about +0.03 AP@0.5 on held-out "
                                        "DSB2018 images, about the same on images with debris and dim nuclei; "
                                        "untick for the fastest run (docs/models.md)")
        self._run = PushButton(text="Segment")
        self._model = text_line("Model:")
        self._hint = text_line("")
        self._use = PushButton(text="Use the suggested model", visible=False)
        self._status = text_line("")
        self.labelling = LabellingSettings()
        self.extend([form(self._image), self._model, self._hint, self._use, self._all, self._tta, self._scales,
                     self.labelling, self._run, self._status])
        self.progress = progress
        if progress is None:  # on its own (not in the panel): its own progress row
            self.progress = ProgressRow()
            self.native.layout().addWidget(self.progress)
        self._run.changed.connect(self.run)
        self._use.changed.connect(self.use_suggested)
        self._image.changed.connect(self._show_model)
        session.follow(self, self._show_model)
        session.follow(self, self.labelling.load)
        session.follow(self, lambda message: show_status(self._status, message), "segmented")
        self._show_model()

    def _suggested(self) -> str:
        """The model the chosen image suggests (the samples do) when it is not the current one."""
        layer = self._image.value
        md = layer.metadata.get(SAMPLE_KEY, {}) if layer is not None else {}
        wanted = md.get("suggested_model", "") if isinstance(md, dict) else ""
        current = session.source if session.model is not None else (builtin_names() or [""])[0]
        return wanted if wanted and wanted != current and wanted in builtin_names() else ""

    def _show_model(self, *_) -> None:
        src = f"{session.source} (on {session.device})" if session.model is not None else \
            f"{(builtin_names() or ['none'])[0]} (built-in default, loaded on first use)"
        self._model.value = f"Model: {src}"
        wanted = self._suggested()
        self._hint.value = (f"The model made for {self._image.value.name} is <b>{wanted}</b>." if wanted else "")
        self._hint.visible = bool(wanted)
        self._use.text = f"Use {wanted}"
        self._use.visible = bool(wanted)

    def use_suggested(self) -> None:
        name = self._suggested()
        if not name:
            return

        def work(report, cancelled):
            from napari_unet.modelfile import load_model

            return load_model(name)

        self.job = Job(work, desc=f"Loading model {name}", on_returned=lambda m: session.set_model(m, name),
                       on_error=lambda exc: show_status(self._status, f"Could not load {name}: {reason(exc)}", error=True),
                       owner=self.native, view=self.progress)

    def run(self) -> None:
        layer = self._image.value
        if layer is None:
            show_status(self._status, "Open or choose an image layer first", error=True)
            return
        if self.job is not None and self.job.running:
            return
        show_status(self._status, f"Segmenting {layer.name} ...")
        self._run.enabled = False
        self.job = segment_layer(self._viewer, layer, all_classes=self._all.value, tta=self._tta.value,
                                 scales="auto" if self._scales.value else (1.0,),
                                 postprocessing=self.labelling.overrides(), status=self._status,
                                 on_finished=self._finished, owner=self.native, view=self.progress)

    def cancel(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()

    def _finished(self) -> None:
        self._run.enabled = True
