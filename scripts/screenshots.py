"""Screenshots of the napari-unet widgets in use on real images, for docs/plugin.md.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py            # docs/screenshots/*.png
    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py --timings  # widget-open times

Uses the built-in models (``fluo-nuclei``, ``em-membranes``) and, for the fine-tuning scene,
the StarDist DSB2018 sample with its masks from ../shared/data when present (else the packaged
nuclei sample with strokes taken from the model's own labels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
SHARED = ROOT.parent / "shared" / "data" / "stardist_dsb2018_sample"
HELA = ROOT.parent / "shared" / "data" / "ctc_fluo_n2dl_hela"
PLUGIN = "napari-unet"


def wait(predicate, timeout=900.0):
    from qtpy.QtWidgets import QApplication

    t0 = time.perf_counter()
    while not predicate():
        QApplication.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("gave up waiting")
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)


def viewer_with(*widgets):
    import napari

    viewer = napari.Viewer(show=True, title="napari U-Net")
    viewer.window.resize(1500, 950)
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, w)[1] for w in widgets]
    return viewer, docks


def shot(viewer, name):
    wait(lambda: True)
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)
    viewer.close()


def idle(widget):
    return lambda: widget.job is not None and not widget.job.running


def real_nuclei():
    """(image, instance mask) of a real nuclei image with ground truth, or None."""
    import tifffile

    img, msk = SHARED / "images" / "img2d.tif", SHARED / "labels" / "mask2d.tif"
    return (tifffile.imread(img), tifffile.imread(msk)) if img.is_file() and msk.is_file() else None


def strokes(instances, ids, ring=5):
    """Convention labels painting the cells ``ids`` of an instance mask, each with a
    background ring (what a user paints by hand)."""
    from scipy import ndimage as ndi

    out = np.zeros(instances.shape, np.uint16)
    for k, i in enumerate(ids):
        cell = instances == i
        out[ndi.binary_dilation(cell, iterations=ring) & (instances == 0) & (out == 0)] = 1
        out[cell] = k + 2
    return out


def start_finetuning(fw, iterations=60, lr=3e-4, tile=188):
    fw._iterations.value, fw._lr.value, fw._tile.value = iterations, lr, tile
    fw._train.native.click()
    wait(lambda: fw.result is not None)
    wait(idle(fw))


def finetune_hela():
    """HeLa nuclei (Cell Tracking Challenge, held out from the built-in model's training):
    paint 12 nuclei of frame t52, validate on frame t13 (fully annotated), fine-tune."""
    import tifffile

    from napari_unet._widgets.segment import segment_layer
    from napari_unet.labels import from_instances
    from napari_unet.metrics import average_precision

    frames = {t: (tifffile.imread(HELA / "images" / f"{t}.tif"), tifffile.imread(HELA / "labels" / f"{t}.tif"))
              for t in ("t13", "t52")}
    viewer, (fw,) = viewer_with("Annotate and fine-tune")
    for t, (image, truth) in frames.items():
        layer = viewer.add_image(image, name=t, visible=t == "t52",
                                 contrast_limits=tuple(np.percentile(image, (1, 99.8))))
        fw._image.value = layer
        fw._new.native.click()
        ann = viewer.layers[f"{t} annotations"]
        if t == "t13":  # fully annotated frame for validation
            ann.data, ann.visible = from_instances(truth), False
        else:
            ids = np.random.default_rng(0).choice([i for i in np.unique(truth) if i], 12, replace=False)
            ann.data = strokes(truth, ids)
    fw._valid.value = viewer.layers["t13 annotations"]
    job = segment_layer(viewer, viewer.layers["t52"])  # the model as it is: the "before" picture
    wait(lambda: not job.running)
    viewer.layers["t52 probabilities"].visible = False
    viewer.layers.move(viewer.layers.index("t52 annotations"), len(viewer.layers))
    viewer.layers.selection.active = viewer.layers["t52 annotations"]
    before = viewer.layers["t52 labels"].data.copy()
    from napari_unet import segment

    t13_before = average_precision(segment(frames["t13"][0], session_model()).labels, frames["t13"][1])
    wait(lambda: True)
    viewer.screenshot(str(OUT / "annotate.png"), canvas_only=False)
    print("wrote", OUT / "annotate.png")
    start_finetuning(fw)
    after = viewer.layers["t52 labels"].data
    print(f"AP50 on t52 (12 nuclei painted): {average_precision(before, frames['t52'][1]):.2f} -> "
          f"{average_precision(after, frames['t52'][1]):.2f}")
    t13_after = average_precision(segment(frames["t13"][0], session_model()).labels, frames["t13"][1])
    print(f"AP50 on t13 (validation frame): {t13_before:.2f} -> {t13_after:.2f}")
    shot(viewer, "finetune.png")


def session_model():
    from napari_unet._widgets._session import session

    return session.model


def finetune_sample():
    """Without the shared data: the packaged sample, strokes from the model's own labels."""
    from napari_unet import segment
    from napari_unet.samples import sample_image

    viewer, (fw,) = viewer_with("Annotate and fine-tune")
    image = sample_image("nuclei")
    instances = segment(image, session_model()).labels
    viewer.add_image(image, name="cells")
    fw._new.native.click()
    ids = [i for i in np.unique(instances) if i]
    viewer.layers["cells annotations"].data = strokes(instances, ids[:8:2])
    start_finetuning(fw)
    shot(viewer, "finetune.png")


def scenes(model_name: str):
    from napari_unet._widgets._session import session
    from napari_unet.samples import sample_image

    # 1. Model
    viewer, (mw,) = viewer_with("Model")
    viewer.add_image(sample_image("nuclei"), name="nuclei")
    mw._builtin.value = model_name
    wait(lambda: session.source == model_name)
    shot(viewer, "model.png")

    # 2. Segment
    viewer, (sw,) = viewer_with("Segment")
    viewer.add_image(sample_image("nuclei"), name="nuclei")
    sw._run.native.click()
    wait(idle(sw))
    shot(viewer, "segment.png")

    # 3. Annotate and fine-tune
    data = real_nuclei()
    if HELA.is_dir():
        finetune_hela()
    else:
        finetune_sample()

    # 4. Border-weight preview on fully annotated nuclei (convention: 1 = background, 2.. = cells)
    from napari_unet.labels import from_instances

    viewer, (ww,) = viewer_with("Border-weight preview")
    if data is None:
        from napari_unet import segment

        image = sample_image("nuclei")
        instances = segment(image, session.model).labels
    else:
        image, instances = data
    viewer.add_image(image, name="cells")
    viewer.add_labels(from_instances(instances), name="cells ground truth", opacity=0.35)
    ww._show.value = True
    wait(lambda: ww.updates >= 1)
    viewer.scene.camera.zoom *= 2.0
    shot(viewer, "weights.png")

    # 5. Export
    viewer, (xw,) = viewer_with("Export")
    from napari_unet import load_model, segment

    image = sample_image("nuclei")
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(segment(image, load_model(model_name)).labels, name="nuclei labels")
    xw._layer.value = viewer.layers["nuclei labels"]
    xw._path.value = Path("~/results/nuclei labels.tif").expanduser()
    shot(viewer, "export.png")


def timings():
    """Seconds to open each widget from the Plugins menu (first open imports its module)."""
    import napari

    from napari_unet._widgets._session import session

    # the Model widget last: it starts loading the default model (importing torch) in the background
    names = ["Segment", "Annotate and fine-tune", "Border-weight preview", "Export", "Model"]
    viewer = napari.Viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="image")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="labels")
    wait(lambda: True)
    widgets = {}
    for name in names:
        t0 = time.perf_counter()
        _, widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        dt = time.perf_counter() - t0
        print(f"{name:24s} {dt * 1000:7.0f} ms   torch imported by then: {'torch' in sys.modules}")
    model_widget = widgets["Model"]
    t0 = time.perf_counter()
    wait(lambda: model_widget._job is not None and not model_widget._job.running)
    print(f"default model loaded {time.perf_counter() - t0:.1f} s later, in the background;"
          f" current model: {session.source or 'none'}")
    viewer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timings", action="store_true", help="only measure how long each widget takes to open")
    ap.add_argument("--model", default="fluo-nuclei", help="model for the nuclei scenes")
    args = ap.parse_args()
    if args.timings:
        timings()
        return
    from napari_unet.builtin import builtin_model_path

    if builtin_model_path(args.model) is None:
        sys.exit(f"built-in model {args.model!r} is not installed (src/napari_unet/models/)")
    OUT.mkdir(parents=True, exist_ok=True)
    scenes(args.model)


if __name__ == "__main__":
    main()
