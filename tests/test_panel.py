"""The U-Net panel as a new user meets it: installed without extras, on a 1366x768 screen,
open an image, Segment, New annotation layer, paint, Fine-tune, all by clicking."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_unet._widgets._progress import Estimate, time_left  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_unet"
SCREEN = (1366, 768)


def _imports(module: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a module of this package
                base = module.parent
                for _ in range(node.level - 1):
                    base = base.parent
                pkg = ".".join(base.relative_to(SRC.parent).parts)
                names.add(f"{pkg}.{node.module}" if node.module else pkg)
                names |= {f"{pkg}.{node.module}.{a.name}" if node.module else f"{pkg}.{a.name}" for a in node.names}
            else:
                names.add(node.module)
    return names


def _module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    if not parts:
        return SRC / "__init__.py"
    rel = Path(*parts)
    for candidate in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_everything_the_panel_imports_comes_with_a_plain_install():
    """Item 1: napari installs plugins without extras, so every module the panel, reader,
    writers and samples import must be napari itself, the standard library, or a core
    dependency of napari-unet (matplotlib is none of these)."""
    tomllib = pytest.importorskip("tomllib")
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    meta = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name.lower().replace("_", "-") for r in meta["dependencies"]}
    allowed = core | {"napari", "npe2"}  # npe2: napari's plugin engine, there whenever a plugin loads
    dists = packages_distributions()
    todo = ["napari_unet._widgets.panel", "napari_unet._reader", "napari_unet._writer", "napari_unet._sample_data"]
    seen, third_party = set(), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        for imp in _imports(path):
            top = imp.split(".")[0]
            if top == "napari_unet":
                todo.append(imp)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.setdefault(top, name)
    assert "napari_unet._widgets.finetune" in seen and "napari_unet.train" in seen
    # optional extras imported only inside the function that needs them, behind a one-line
    # message naming the extra when it is missing (bioimage.io export: _require_spec)
    optional = {("bioimageio", "napari_unet.bioimageio"), ("imageio", "napari_unet.bioimageio")}  # imageio: with scikit-image
    for top, where in sorted(third_party.items()):
        if (top, where) in optional:
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
        assert owners & allowed, f"{where} imports {top} ({owners}), which a plain `pip install napari-unet` lacks"
    assert "matplotlib" not in third_party


def test_time_left_reads_like_a_person_says_it():
    assert time_left(0.4) == "almost done"
    assert time_left(7.2) == "about 7 s left"
    assert time_left(43) == "about 45 s left"
    assert time_left(150) == "about 2 min 30 s left"
    assert time_left(1500) == "about 25 min left"
    assert time_left(4000) == "about 1 h 07 min left"
    est = Estimate()
    assert est.update(1, 100, now=10.0) == "estimating the time left ..."  # the first step: warm-up
    assert est.update(11, 100, now=20.0) == "about 1 min 30 s left"  # 1 s per step since then, 89 to go


def _leaves(root):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit, QProgressBar, QWidget

    from napari_unet._widgets._plot import TrainingPlot

    kinds = (QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit, QProgressBar, TrainingPlot)
    out = []
    for w in root.findChildren(QWidget):
        if isinstance(w, kinds) and w.isVisibleTo(root) and not isinstance(w.parent(), (QAbstractSpinBox, QComboBox)):
            out.append(w)
    return out


def _rect(w, root):
    from qtpy.QtCore import QPoint, QRect

    return QRect(w.mapTo(root, QPoint(0, 0)), w.size())


def test_new_user_on_a_laptop_screen_clicks_through_without_matplotlib(make_napari_viewer, qtbot, session, tiny_model,
                                                                       blobs, monkeypatch):
    """Items 1, 2, 7 and 8 (stale Segment status): the whole workflow in the panel at
    1366x768, with matplotlib not installed; nothing clipped, squeezed or overlapping."""
    from qtpy.QtWidgets import QApplication

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails, as without it
    image, painted = blobs
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    viewer.add_image(image, name="blobs")
    session.set_model(tiny_model, "tiny")
    _, panel = viewer.window.add_plugin_dock_widget("napari-unet", "U-Net")
    for section in panel.sections.values():
        section.expand()

    panel.segment._run.native.click()  # 2. Segment
    qtbot.waitUntil(lambda: panel.segment.job is not None and not panel.segment.job.running, timeout=60_000)
    assert "blobs: " in panel.segment._status.value and "found with tiny" in panel.segment._status.value
    qtbot.waitUntil(lambda: panel.export._layer.value is viewer.layers["blobs labels"], timeout=5_000)  # 5.
    ft = panel.finetune
    ft._new.native.click()  # 3. New annotation layer, paint, Fine-tune
    viewer.layers["blobs annotations"].data = painted
    # the sections follow the layer list: the preview shows the annotations, not the result
    qtbot.waitUntil(lambda: panel.weights._source.value is viewer.layers["blobs annotations"], timeout=5_000)
    assert viewer.layers["blobs annotations"] in panel.finetune._valid.choices
    ft._iterations.value, ft._tile.value = 6, 124
    ft._train.native.click()
    qtbot.waitUntil(lambda: "iteration" in panel.progress.label.text(), timeout=60_000)  # 7. progress in the panel
    assert not panel.progress.isHidden() and panel.progress.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: ft.result is not None and not ft.job.running, timeout=120_000)
    assert ft.job.outcome == "returned" and not ft.result.cancelled
    assert "found with tiny-finetuned" in panel.segment._status.value  # 8. the Segment status follows
    assert panel.progress.isHidden()
    assert len(ft._plot.it) == 6 and not ft._plot.isHidden()

    for _ in range(5):
        QApplication.processEvents()
    assert window.minimumSizeHint().height() <= SCREEN[1], window.minimumSizeHint()
    assert window.height() <= SCREEN[1] and window.width() <= SCREEN[0]
    body = panel.scroll.widget()
    viewport = panel.scroll.viewport().width()
    leaves = _leaves(body)
    assert len(leaves) > 40
    for w in leaves:  # nothing squeezed or cut off at the right
        r = _rect(w, body)
        hint = w.minimumSizeHint()
        assert w.height() >= min(hint.height(), w.maximumHeight()), (type(w).__name__, w.height(), hint)
        if not (hasattr(w, "wordWrap") and w.wordWrap()):  # (wrapped text may be narrower than one line)
            assert w.width() >= min(hint.width(), w.maximumWidth()), (type(w).__name__, w.width(), hint)
        assert r.right() < viewport + 1, (type(w).__name__, getattr(w, "text", lambda: "")(), r, viewport)
    for i, a in enumerate(leaves):  # nothing drawn over anything else (e.g. the plot over Save to)
        for b in leaves[i + 1:]:
            if a.isAncestorOf(b) or b.isAncestorOf(a):
                continue
            assert not _rect(a, body).intersects(_rect(b, body)), (type(a).__name__, type(b).__name__)
    paint_buttons = [ft._bg.native, ft._cell.native]
    for button in paint_buttons:  # "Background (1)" and "New cell (M)" keep their text visible
        assert button.width() >= button.fontMetrics().horizontalAdvance(button.text())
        assert button.height() >= button.fontMetrics().height()


def test_bioimageio_export_without_its_extra_says_what_to_install(monkeypatch):
    import builtins

    from napari_unet import bioimageio as B

    real = builtins.__import__

    def no_bioimageio(name, *args, **kwargs):
        if name.startswith("bioimageio"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bioimageio)
    with pytest.raises(B.BioimageioError, match="needs bioimageio.spec"):
        B._require_spec()
