"""Click through the U-Net panel as a new user would, in a real napari window, and fail on
any exception: for checking an install made the way napari installs plugins (no extras).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install -c constraints.txt 'napari[pyqt6]' .
    xvfb-run -a -s "-screen 0 1366x768x24" /tmp/v/bin/python scripts/plain_install_check.py [SHOT.png]

Opens the nuclei sample, opens the panel from the Plugins menu's command, presses Segment,
New annotation layer, paints a few nuclei (taken from the segmentation), presses Fine-tune,
and prints what the user sees and the main window's minimum height.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
from _qtwait import wait


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    errors = []
    sys.excepthook = lambda *exc: errors.append("".join(traceback.format_exception(*exc)))
    from napari.utils.notifications import notification_manager

    notification_manager.notification_ready.connect(
        lambda n: errors.append(f"notification: {n.message}") if str(n.severity) in ("error", "ERROR") else None)

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample("napari-unet", "nuclei")
    _, panel = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net")
    wait(lambda: panel.model._job is not None and not panel.model._job.running)  # the default model
    print("model:", panel.model._info.value.split("<br>")[0])
    panel.segment._run.native.click()
    wait(lambda: panel.segment.job is not None and not panel.segment.job.running)
    print("segment:", panel.segment._status.value)
    panel.sections["Annotate and fine-tune"].expand()
    ft = panel.finetune
    ft._new.native.click()
    labels = viewer.layers["nuclei labels"].data
    ann = viewer.layers["nuclei annotations"]
    strokes = np.zeros_like(ann.data)
    ids = [i for i in np.unique(labels) if i][:6]
    from scipy import ndimage as ndi

    for k, i in enumerate(ids):  # a background ring, then the nucleus
        cell = labels == i
        strokes[ndi.binary_dilation(cell, iterations=4) & (labels == 0)] = 1
        strokes[cell] = k + 2
    ann.data = strokes
    ft._iterations.value, ft._tile.value = 8, 124
    ft._train.native.click()
    wait(lambda: ft.result is not None and ft.job is not None and not ft.job.running)
    print("fine-tune:", ft._status.value)
    from qtpy.QtWidgets import QScrollArea

    w = ft._status.native  # scroll the panel to the fine-tune result, so that the screenshot shows it
    while w is not None and not isinstance(w, QScrollArea):
        w = w.parentWidget()
    if w is not None:
        w.ensureWidgetVisible(ft._status.native)
    QApplication.processEvents()
    height = viewer.window._qt_window.minimumSizeHint().height()
    print(f"main window minimum height with the panel open: {height} px")
    shot = sys.argv[1] if len(sys.argv) > 1 else "plain_install_check.png"
    from skimage.io import imsave

    imsave(shot, viewer.screenshot(canvas_only=False), check_contrast=False)
    print("screenshot:", shot)
    try:
        import matplotlib  # noqa: F401

        print("(matplotlib is installed here)")
    except ImportError:
        print("matplotlib is not installed here")
    viewer.close()
    if errors:
        print("FAILED:\n" + "\n".join(errors))
        return 1
    if height > 768 or ft.job.outcome != "returned":
        print("FAILED: does not fit a 768 px screen" if height > 768 else "FAILED: fine-tuning did not finish")
        return 1
    print("OK: no exception")
    return 0


if __name__ == "__main__":
    sys.exit(main())
