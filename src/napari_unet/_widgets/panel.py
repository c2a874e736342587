"""The napari U-Net panel: the whole workflow in one dock widget, in order (model, segment,
annotate and fine-tune, border-weight preview, export), as collapsible sections in a
scroll area (so that it fits a 1366x768 screen), with one progress row at the bottom: what
runs, a progress bar, the time left, and Cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from ._progress import ProgressRow
from ._session import session
from .export import ExportWidget
from .finetune import FinetuneWidget
from .model import ModelWidget
from .segment import SegmentWidget
from .weights import WeightsWidget

if TYPE_CHECKING:
    import napari.viewer

SECTIONS = ["Model", "Segment", "Annotate and fine-tune", "Border-weight preview", "Export"]


class Section(QWidget):
    """A titled section whose content shows or hides with a click on the title.

    (A plain show/hide rather than superqt's QCollapsible: that one animates a maximum
    height fixed when it opens, which clips content that grows later, such as the loss plot
    or a longer status line.)
    """

    def __init__(self, title: str, content: QWidget, expanded: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.button = QToolButton()
        self.button.setText(title)
        self.button.setCheckable(True)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.button.setStyleSheet("QToolButton { font-weight: bold; text-align: left; border: none; padding: 3px; }")
        self.content = content
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.button)
        lay.addWidget(content)
        self.button.toggled.connect(self._toggled)
        self.button.setChecked(expanded)
        self._toggled(expanded)

    def _toggled(self, on: bool) -> None:
        self.button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.content.setVisible(on)

    def isExpanded(self) -> bool:  # noqa: N802 (Qt style, like QCollapsible)
        return self.button.isChecked()

    def expand(self) -> None:
        self.button.setChecked(True)

    def collapse(self) -> None:
        self.button.setChecked(False)

    def setSubtitle(self, text: str) -> None:  # noqa: N802
        self.button.setText(f"{self.title}: {text}" if text else self.title)


class UNetPanel(QWidget):
    """One dock widget for the whole workflow. The sections are the widgets of
    :mod:`napari_unet._widgets` (``model``, ``segment``, ``finetune``, ``weights``,
    ``export``), sharing the current model and one progress row."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = viewer
        self.progress = ProgressRow()
        self.model = ModelWidget(viewer, progress=self.progress)
        self.segment = SegmentWidget(viewer, progress=self.progress)
        self.finetune = FinetuneWidget(viewer, progress=self.progress)
        self.weights = WeightsWidget(viewer, progress=self.progress)
        self.export = ExportWidget(viewer, progress=self.progress)
        self.parts = [self.model, self.segment, self.finetune, self.weights, self.export]
        self.sections = {}
        body = QWidget()
        col = QVBoxLayout(body)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        for k, (title, part) in enumerate(zip(SECTIONS, self.parts, strict=True)):
            section = Section(f"{k + 1}. {title}", part.native, expanded=title in ("Model", "Segment"))
            section.button.toggled.connect(lambda on, s=section: on and self._bring_into_view(s))
            self.sections[title] = section
            col.addWidget(section)
            line = QFrame()
            line.setFrameShape(QFrame.Shape.HLine)
            line.setFrameShadow(QFrame.Shadow.Sunken)
            col.addWidget(line)
        col.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidget(body)
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setMinimumHeight(120)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.progress)
        # the sections' layer choices follow the layer list (napari does this only for magicgui
        # widgets docked directly)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self.reset_choices)
        self.destroyed.connect(lambda *_: self._disconnect(events))
        session.changed.connect(self._show_model)
        self.destroyed.connect(lambda *_: session.changed.disconnect(self._show_model))
        self._show_model()

    def _widest(self) -> int:
        """Width that every section needs, open or not (the scroll area never scrolls sideways)."""
        widest = max(part.native.minimumSizeHint().width() for part in self.parts)
        return widest + self.scroll.verticalScrollBar().sizeHint().width() + 12

    def minimumSizeHint(self):  # noqa: N802 (Qt)
        hint = super().minimumSizeHint()
        return QSize(max(hint.width(), self._widest()), hint.height())

    def sizeHint(self):  # noqa: N802 (Qt)
        hint = super().sizeHint()
        return QSize(max(360, self._widest()), hint.height())

    def _disconnect(self, events) -> None:
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.disconnect(self.reset_choices)

    def reset_choices(self, *_) -> None:
        for part in self.parts:
            part.reset_choices()

    def _show_model(self) -> None:
        self.sections["Model"].setSubtitle(session.model.name if session.model is not None else "")

    def _bring_into_view(self, section: Section) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, lambda: self.scroll.ensureWidgetVisible(section.button, 0, 0))
