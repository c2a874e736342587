"""Background jobs: a napari worker whose progress is shown in the panel's progress row (bar,
time left, Cancel) and in napari's activity dock, relayed to the main thread, and a Cancel
that the core functions check between tiles or iterations."""

from __future__ import annotations

import threading
from collections.abc import Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import show_warning
from napari.utils.progress import cancelable_progress
from qtpy.QtCore import QObject, Signal


class _Relay(QObject):
    """Lives in the main thread: a signal emitted from the worker is delivered there."""

    progressed = Signal(object)


def _is_cancelled_error(exc: BaseException) -> bool:
    from napari_unet.tiling import Cancelled

    return isinstance(exc, Cancelled)


class Job:
    """Run ``fn(report, cancelled)`` in a worker thread.

    ``report(value)`` may be called from the worker; ``count(value) -> (done, total)`` turns
    it into progress-bar steps, and ``on_progress(value)`` gets it on the main thread.
    ``cancelled()`` is true once Cancel was pressed. Exactly one of ``on_returned(result)``,
    ``on_error(exc)`` or ``on_cancelled()`` is called, then ``on_finished()``; all on the
    main thread. A result that arrives after Cancel is dropped (no half-made layers) unless
    ``keep_cancelled_result`` (training returns its best model so far when cancelled). When
    the ``owner`` widget is destroyed (its dock or the viewer closed), the job is cancelled
    and its callbacks are no longer called. ``view`` (a :class:`~._progress.ProgressRow`)
    shows the job while it runs; ``on_warning(text)`` gets the warnings the work raises.
    """

    def __init__(self, fn: Callable, *, desc: str, count=lambda v: v, on_progress=None,
                 on_returned=None, on_error=None, on_cancelled=None, on_finished=None,
                 keep_cancelled_result=False, owner=None, view=None, on_warning=None):
        self._cancel = threading.Event()
        self._count = count
        self._keep = keep_cancelled_result
        self._on = dict(progress=on_progress, returned=on_returned, error=on_error,
                        cancelled=on_cancelled, finished=on_finished)
        self.running = True
        self._orphan = False
        self.outcome = None  # "returned", "error" or "cancelled" once finished
        self.done = 0
        self.total = 0
        self.desc = desc
        self.eta = ""
        self.view = view
        self.pbar = cancelable_progress(total=0, desc=desc)
        self._relay = _Relay()
        self._relay.progressed.connect(self._progress)
        self.worker = create_worker(
            fn, self._relay.progressed.emit, self.cancelled,
            _connect={"returned": self._returned, "errored": self._errored, "finished": self._finished},
            _start_thread=False,
        )
        # warnings from the core: to the section (on_warning) or as a napari notification
        self.worker.warned.connect(lambda w: (on_warning or show_warning)(str(w[0])))
        if owner is not None:
            owner.destroyed.connect(self._orphaned)
        if view is not None:
            view.start(self)
        self.worker.start()

    def _orphaned(self, *_) -> None:
        self._orphan = True
        self._cancel.set()

    def cancel(self) -> None:
        self._cancel.set()
        self.pbar.set_description(f"{self.pbar.desc} (cancelling)")
        self._view("update")

    def set_description(self, desc: str) -> None:
        self.desc = desc
        self.pbar.set_description(desc)
        self._view("update")

    def _view(self, what: str) -> None:
        if self.view is not None and not self._orphan:
            getattr(self.view, what)(self)

    def cancelled(self) -> bool:
        return self._cancel.is_set() or self.pbar.is_canceled or self.worker.abort_requested

    def _call(self, what, *args):
        if self._on[what] is not None and not self._orphan:
            self._on[what](*args)

    def _progress(self, value) -> None:
        if not self.running:
            return
        done, total = self._count(value)
        if total and self.pbar.total != total:
            self.pbar.total = total
        self.pbar.update(done - self.pbar.n)
        self.done, self.total = done, total or self.total
        self._view("update")
        self._call("progress", value)

    def _returned(self, result) -> None:
        if self.cancelled() and not self._keep:
            return
        self.outcome = "returned"
        self._call("returned", result)

    def _errored(self, exc) -> None:
        if _is_cancelled_error(exc) or self.cancelled():
            return
        self.outcome = "error"
        self._call("error", exc)

    def _finished(self) -> None:
        self.running = False
        self.pbar.close()
        self._view("finish")
        if self.outcome is None:
            self.outcome = "cancelled"
            self._call("cancelled")
        self._call("finished")
