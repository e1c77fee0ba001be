"""Background jobs: a function run on a worker thread, polled from the GUI thread.

The worker gets a :class:`Progress` to report a stage text and a fraction (or ``None`` for "busy") and
to notice cancellation. The GUI thread polls :meth:`Job.snapshot` (e.g. from a ``qt.QTimer``) and, once
:attr:`Job.finished`, takes :meth:`Job.result` and does the MRML/Qt work itself: workers never touch
MRML or Qt.

Cancelling is immediate for the GUI: the job reports ``cancelled`` at once and its eventual result is
discarded; the worker stops at its next check (uploads and downloads check between chunks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import CancelledError

__all__ = ["Job", "Progress"]

T = TypeVar("T")


class Progress:
    """Handed to the worker function: report progress, check for cancellation."""

    def __init__(self, job: Job[Any]) -> None:
        self._job = job

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the user cancels (pass it to blocking helpers that can stop early)."""
        return self._job._cancel

    @property
    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` when the job was cancelled."""
        if self.cancelled:
            raise CancelledError()

    def __call__(self, stage: str, fraction: float | None = None) -> None:
        """Report the current stage (one short sentence) and how far it is (0..1, or None if unknown)."""
        with self._job._lock:
            self._job._stage = stage
            self._job._fraction = None if fraction is None else max(0.0, min(1.0, float(fraction)))


class Job(Generic[T]):
    """One long call; states: ``pending`` → ``running`` → ``done`` | ``failed`` | ``cancelled``."""

    def __init__(self, fn: Callable[[Progress], T], name: str = "job") -> None:
        self.name = name
        self._fn = fn
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "pending"
        self._stage = "Waiting to start"
        self._fraction: float | None = 0.0
        self._result: T | None = None
        self._error: BaseException | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

    # -- GUI thread -------------------------------------------------------------------------------
    def start(self) -> Job[T]:
        """Start the worker thread (daemon: a hung server never keeps Slicer from quitting)."""
        if self._thread is not None:
            raise RuntimeError("job already started")
        self._state = "running"
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"CaseAnonymizer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the worker to stop; from now on the job reports ``cancelled`` and its result is dropped."""
        with self._lock:
            if self._state in ("done", "failed", "cancelled"):
                return
            self._state = "cancelled"
            self._stage = "Cancelled"
            self.ended_at = time.monotonic()
        self._cancel.set()
        self._finished.set()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.state in ("done", "failed", "cancelled")

    def snapshot(self) -> tuple[str, str, float | None]:
        """``(state, stage text, fraction or None)`` for the progress bar."""
        with self._lock:
            return self._state, self._stage, self._fraction

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished (tests, scripts); True if finished within ``timeout``."""
        return self._finished.wait(timeout)

    def result(self) -> T:
        """The worker's return value; raises its exception, or :class:`CancelledError`."""
        with self._lock:
            state, result, error = self._state, self._result, self._error
        if state == "cancelled":
            raise CancelledError()
        if state == "failed":
            assert error is not None
            raise error
        if state != "done":
            raise RuntimeError(f"job {self.name!r} has not finished")
        return result  # type: ignore[return-value]

    @property
    def error(self) -> BaseException | None:
        with self._lock:
            return self._error

    # -- worker thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        progress = Progress(self)
        try:
            result = self._fn(progress)
        except BaseException as exc:  # reported to the GUI thread, never raised on the worker
            with self._lock:
                if self._state != "cancelled":
                    self._state = "cancelled" if isinstance(exc, CancelledError) else "failed"
                    self._error = exc
                    self.ended_at = time.monotonic()
        else:
            with self._lock:
                if self._state != "cancelled":
                    self._state = "done"
                    self._result = result
                    self._stage = "Done"
                    self._fraction = 1.0
                    self.ended_at = time.monotonic()
        finally:
            self._finished.set()
