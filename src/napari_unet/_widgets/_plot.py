"""A small live plot of the training loss and validation score, drawn with Qt's QPainter (no
plotting library to install, fast enough to redraw after every iteration)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_unet.training.smoothing import CURVE_SMOOTHING, smoothed

LOSS = QColor("#f28e2b")
SCORE = QColor("#59a14f")


class TrainingPlot(QWidget):
    """Loss of every iteration (thin), its moving average (thick, left axis) and the
    validation score (green dots, right axis, 0 to 1). ``reset()``, then ``add(progress)``
    after every iteration."""

    def __init__(self, text_color: str = "#f0f1f2", parent: QWidget | None = None):
        super().__init__(parent)
        self.text_color = QColor(text_color)
        self.setMinimumHeight(110)
        self.setMaximumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("orange: training loss (thin: every iteration, thick: moving average);\n"
                        "green: validation score (right axis, 0 to 1), when a validation layer is chosen")
        self.reset()

    @property
    def canvas(self) -> QWidget:  # the widget to put in a layout
        return self

    def reset(self) -> None:
        self.it, self.loss, self.ema, self.score_it, self.score = [], [], [], [], []
        self.iterations = 0
        self.update()

    def add(self, p) -> None:
        self.iterations = p.iterations
        self.it.append(p.iteration)
        self.loss.append(p.loss)
        self.ema.append(smoothed(self.ema[-1] if self.ema else None, p.loss, CURVE_SMOOTHING))
        if p.validation_score is not None:
            self.score_it.append(p.iteration)
            self.score.append(p.validation_score)
        self.update()

    def redraw(self) -> None:
        self.update()

    def sizeHint(self):  # noqa: N802 (Qt)
        from qtpy.QtCore import QSize

        return QSize(300, 130)

    # ------------------------------------------------------------------ drawing
    def paintEvent(self, event) -> None:  # noqa: N802 (Qt)
        qp = QPainter(self)
        qp.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        qp.setFont(font)
        fm = qp.fontMetrics()
        lo, hi = (min(self.loss), max(self.loss)) if self.loss else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        left = fm.horizontalAdvance(f"{hi:.2f}") + 6
        right = fm.horizontalAdvance("1.0") + 6
        top, bottom = fm.height() + 4, fm.height() + 4
        area = QRectF(left, top, max(10, self.width() - left - right), max(10, self.height() - top - bottom))
        n = max(self.iterations, self.it[-1] if self.it else 1, 1)

        def x(i):
            return area.left() + area.width() * (i / n)

        def y_loss(v):
            return area.bottom() - area.height() * (v - lo) / (hi - lo)

        def y_score(v):
            return area.bottom() - area.height() * v

        qp.setPen(QPen(self.text_color, 1))
        qp.drawRect(area)
        qp.drawText(QRectF(0, top - fm.height() / 2, left - 4, fm.height()),
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{hi:.2f}")
        qp.drawText(QRectF(0, area.bottom() - fm.height() / 2, left - 4, fm.height()),
                    Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{lo:.2f}")
        qp.drawText(QRectF(area.right() + 4, top - fm.height() / 2, right, fm.height()),
                    Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "1.0")
        qp.drawText(QRectF(area.right() + 4, area.bottom() - fm.height() / 2, right, fm.height()),
                    Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "0")
        qp.drawText(QRectF(area.left(), area.bottom() + 2, area.width(), fm.height()),
                    Qt.AlignmentFlag.AlignCenter, f"iteration (of {n})")
        qp.setPen(LOSS)
        qp.drawText(QRectF(area.left(), 0, area.width(), fm.height()), Qt.AlignmentFlag.AlignLeft, "loss")
        qp.setPen(SCORE)
        qp.drawText(QRectF(area.left(), 0, area.width(), fm.height()), Qt.AlignmentFlag.AlignRight,
                    "validation score")
        if not self.it:
            return
        qp.setClipRect(area.adjusted(-3, -3, 3, 3))
        thin = QColor(LOSS)
        thin.setAlpha(90)
        for values, pen in ((self.loss, QPen(thin, 1)), (self.ema, QPen(LOSS, 2))):
            path = QPainterPath(QPointF(x(self.it[0]), y_loss(values[0])))
            for i, v in zip(self.it[1:], values[1:], strict=True):
                path.lineTo(x(i), y_loss(v))
            qp.setPen(pen)
            qp.drawPath(path)
        if self.score:
            qp.setPen(QPen(SCORE, 1.5))
            qp.setBrush(SCORE)
            points = [QPointF(x(i), y_score(v)) for i, v in zip(self.score_it, self.score, strict=True)]
            for a, b in zip(points, points[1:], strict=False):
                qp.drawLine(a, b)
            for pt in points:
                qp.drawEllipse(pt, 2.5, 2.5)
