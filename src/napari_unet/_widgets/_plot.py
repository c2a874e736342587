"""A small live plot of the training loss and validation score (matplotlib, imported on first
use so that opening the widget stays fast)."""

from __future__ import annotations


class TrainingPlot:
    """``canvas`` is a QWidget; ``reset()`` then ``add(progress)`` after every iteration."""

    def __init__(self, text_color: str = "#f0f1f2"):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtCore import QTimer

        self.figure = Figure(figsize=(3.6, 2.4), layout="tight")
        self.figure.patch.set_alpha(0)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setStyleSheet("background: transparent")
        self.canvas.setMinimumHeight(200)
        self.loss_ax = self.figure.add_subplot()
        self.score_ax = self.loss_ax.twinx()
        for ax in (self.loss_ax, self.score_ax):
            ax.set_facecolor("none")
            ax.tick_params(colors=text_color, labelsize=7)
            for side in ax.spines.values():
                side.set_color(text_color)
        self.loss_ax.set_xlabel("iteration", color=text_color, fontsize=8)
        self.loss_ax.set_ylabel("loss", color="#f28e2b", fontsize=8)
        self.score_ax.set_ylabel("validation score", color="#59a14f", fontsize=8)
        (self._raw,) = self.loss_ax.plot([], [], color="#f28e2b", alpha=0.3, lw=0.8)
        (self._smooth,) = self.loss_ax.plot([], [], color="#f28e2b", lw=1.6, label="loss")
        (self._score,) = self.score_ax.plot([], [], "o-", color="#59a14f", ms=3, lw=1.2)
        # drawing holds the GIL for tens of ms: at most a few redraws a second, so that the
        # training thread is not slowed down
        self._timer = QTimer(self.canvas)
        self._timer.setSingleShot(True)
        self._timer.setInterval(400)
        self._timer.timeout.connect(self.redraw)
        self.reset()

    def reset(self) -> None:
        self.it, self.loss, self.ema, self.score_it, self.score = [], [], [], [], []
        self.redraw()

    def add(self, p) -> None:
        self.it.append(p.iteration)
        self.loss.append(p.loss)
        self.ema.append(p.loss if not self.ema else 0.9 * self.ema[-1] + 0.1 * p.loss)
        if p.validation_score is not None:
            self.score_it.append(p.iteration)
            self.score.append(p.validation_score)
        if p.iteration == p.iterations:
            self.redraw()
        elif not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        self._raw.set_data(self.it, self.loss)
        self._smooth.set_data(self.it, self.ema)
        self._score.set_data(self.score_it, self.score)
        self.loss_ax.relim()
        self.loss_ax.autoscale_view()
        self.score_ax.set_ylim(0, 1)
        self.canvas.draw_idle()
