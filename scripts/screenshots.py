"""Screenshots of the napari-unet panel in use on real images, for docs/plugin.md, taken from
a real napari window the size of the screen.

    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshots.py --size 1366x768
    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py --size 1600x1000
    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py --timings  # panel-open time

writes docs/screenshots/<scene>-<size>.png. Uses the built-in models and, for the fine-tuning
scenes, HeLa nuclei from ../shared/data when present (else the packaged nuclei sample with
strokes taken from the model's own labels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _qtwait import wait

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
SHARED = ROOT.parent / "shared" / "data" / "stardist_dsb2018_sample"
HELA = ROOT.parent / "shared" / "data" / "ctc_fluo_n2dl_hela"
PLUGIN = "napari-unet"
SIZE = (1366, 768)



def viewer_with(*open_sections):
    """A napari window the size of the screen with the U-Net panel docked, ``open_sections``
    expanded and the others collapsed."""
    import napari

    viewer = napari.Viewer(show=True, title="napari U-Net")
    viewer.window._qt_window.resize(*SIZE)
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net")
    for title, section in panel.sections.items():
        section.expand() if title in open_sections else section.collapse()
    return viewer, panel


def shot(viewer, name, close=True):
    wait(lambda: True)
    path = OUT / f"{name}-{SIZE[0]}x{SIZE[1]}.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path)
    if close:
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
    viewer, panel = viewer_with("Annotate and fine-tune")
    fw = panel.finetune
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
    job = segment_layer(viewer, viewer.layers["t52"], status=panel.segment._status)  # the "before" picture
    wait(lambda: not job.running)
    viewer.layers["t52 nucleus probability"].visible = False
    viewer.layers.move(viewer.layers.index("t52 annotations"), len(viewer.layers))
    viewer.layers.selection.active = viewer.layers["t52 annotations"]
    before = viewer.layers["t52 labels"].data.copy()
    from napari_unet import segment

    t13_before = average_precision(segment(frames["t13"][0], session_model()).labels, frames["t13"][1])
    shot(viewer, "annotate", close=False)
    start_finetuning(fw)
    after = viewer.layers["t52 labels"].data
    print(f"AP50 on t52 (12 nuclei painted): {average_precision(before, frames['t52'][1]):.2f} -> "
          f"{average_precision(after, frames['t52'][1]):.2f}")
    t13_after = average_precision(segment(frames["t13"][0], session_model()).labels, frames["t13"][1])
    print(f"AP50 on t13 (validation frame): {t13_before:.2f} -> {t13_after:.2f}")
    print("best iteration:", fw.result.best_iteration)
    panel.scroll.ensureWidgetVisible(fw._plot)
    shot(viewer, "finetune")


def session_model():
    from napari_unet._widgets._session import session

    return session.model


def finetune_sample():
    """Without the shared data: the packaged sample, strokes from the model's own labels."""
    from napari_unet import segment
    from napari_unet.samples import sample_image

    viewer, panel = viewer_with("Annotate and fine-tune")
    image = sample_image("nuclei")
    instances = segment(image, session_model()).labels
    viewer.add_image(image, name="cells")
    panel.finetune._new.native.click()
    ids = [i for i in np.unique(instances) if i]
    viewer.layers["cells annotations"].data = strokes(instances, ids[:8:2])
    shot(viewer, "annotate", close=False)
    start_finetuning(panel.finetune)
    panel.scroll.ensureWidgetVisible(panel.finetune._plot)
    shot(viewer, "finetune")


def scenes(model_name: str):
    from napari_unet._widgets._session import session
    from napari_unet.samples import sample_image

    # 1. Model and Segment (the panel as it opens), on the nuclei sample
    viewer, panel = viewer_with("Model", "Segment")
    viewer.open_sample(PLUGIN, "nuclei")
    panel.model._builtin.value = model_name
    wait(lambda: session.source == model_name)
    panel.segment._run.native.click()
    wait(idle(panel.segment))
    shot(viewer, "segment")

    # 2. Annotate and fine-tune
    if HELA.is_dir():
        finetune_hela()
    else:
        finetune_sample()

    # 3. Border-weight preview on fully annotated nuclei (convention: 1 = background, 2.. = cells)
    from napari_unet.labels import from_instances

    data = real_nuclei()
    viewer, panel = viewer_with("Border-weight preview")
    if data is None:
        from napari_unet import segment

        image = sample_image("nuclei")
        instances = segment(image, session.model).labels
    else:
        image, instances = data
    viewer.add_image(image, name="cells")
    viewer.add_labels(from_instances(instances), name="cells annotations", opacity=0.35)
    ww = panel.weights
    ww._source.value = viewer.layers["cells annotations"]
    ww._show.value = True
    wait(lambda: ww.updates >= 1)
    viewer.scene.camera.zoom *= 2.0
    shot(viewer, "weights")

    # 4. Export, beside the image
    viewer, panel = viewer_with("Export")
    viewer.open_sample(PLUGIN, "nuclei")
    panel.segment._run.native.click()
    wait(idle(panel.segment))
    panel.export._path.value = Path("~/results/nuclei labels.tif").expanduser()
    shot(viewer, "export")


def timings():
    """Seconds to open the panel from the Plugins menu (the first open imports its modules;
    torch is imported in the background by the first model load)."""
    import napari

    from napari_unet._widgets._session import session

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.uint8), name="image")
    wait(lambda: True)
    t0 = time.perf_counter()
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "U-Net")
    dt = time.perf_counter() - t0
    print(f"U-Net panel opened in {dt * 1000:.0f} ms; torch imported by then: {'torch' in sys.modules}")
    t0 = time.perf_counter()
    wait(lambda: panel.model._job is not None and not panel.model._job.running)
    print(f"default model loaded {time.perf_counter() - t0:.1f} s later, in the background;"
          f" current model: {session.source or 'none'}")
    viewer.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timings", action="store_true", help="only measure how long each widget takes to open")
    ap.add_argument("--model", default="fluo-nuclei", help="model for the nuclei scenes")
    ap.add_argument("--size", default="1366x768", help="window size, the size of the virtual screen")
    args = ap.parse_args()
    global SIZE
    SIZE = tuple(int(v) for v in args.size.lower().split("x"))
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
