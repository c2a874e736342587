"""The progress row of the panel: what is running, a progress bar, the time left, and Cancel."""

from __future__ import annotations

import time

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QSizePolicy, QVBoxLayout, QWidget


def time_left(seconds: float) -> str:
    """``"about 40 s left"``, ``"about 2 min 30 s left"``: rounded, as a person would say it."""
    if seconds < 1:
        return "almost done"
    if seconds < 10:
        return f"about {round(seconds)} s left"
    if seconds < 60:
        return f"about {round(seconds / 5) * 5} s left"
    if seconds < 600:
        m, s = divmod(round(seconds / 10) * 10, 60)
        return f"about {m} min {s} s left" if s else f"about {m} min left"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min left"
    h, m = divmod(round(seconds / 60), 60)
    return f"about {h} h {m:02d} min left"


class Estimate:
    """Time left from the rate since the first step (the model load and the first step's
    warm-up are not counted)."""

    def __init__(self) -> None:
        self.first: tuple[float, int] | None = None

    def update(self, done: int, total: int, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        if not total:
            return ""
        if self.first is None or done < self.first[1]:
            self.first = (now, done)
            return "estimating the time left ..."
        t0, d0 = self.first
        if done - d0 < 1 or now - t0 < 0.5:
            return "estimating the time left ..."
        rate = (now - t0) / (done - d0)
        return time_left(rate * (total - done))


class ProgressRow(QWidget):
    """Shows the newest running :class:`~._jobs.Job`: its description, a bar with the time
    left, and a Cancel button beside it. Hidden while nothing runs."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.jobs: list = []
        self._estimates: dict[int, Estimate] = {}
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(60)
        self.bar.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop within one tile or one training iteration")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        lay.addWidget(self.label)
        lay.addLayout(row)
        self.setVisible(False)

    @property
    def job(self):
        """The job shown (the newest one still running), or None."""
        return self.jobs[-1] if self.jobs else None

    def start(self, job) -> None:
        self.jobs.append(job)
        self._estimates[id(job)] = Estimate()
        self._show()

    def update(self, job) -> None:
        text = self._estimates[id(job)].update(job.done, job.total) if id(job) in self._estimates else ""
        job.eta = text
        if job is self.job:
            self._show()

    def finish(self, job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        self._estimates.pop(id(job), None)
        self._show()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self._show()

    def _show(self) -> None:
        job = self.job
        self.setVisible(job is not None)
        if job is None:
            return
        self.label.setText(f"{job.desc} · {job.eta}" if job.eta else job.desc)
        if job.total:
            self.bar.setRange(0, job.total)
            self.bar.setValue(min(job.done, job.total))
            self.bar.setFormat("%v/%m")
        else:
            self.bar.setRange(0, 0)  # busy (e.g. loading the model)
            self.bar.setFormat("")
        cancelling = job.cancelled()
        self.cancel_button.setEnabled(not cancelling)
        self.cancel_button.setText("Cancelling" if cancelling else "Cancel")
