"""The server's side of one inference worker process: start it, hand it a job, notice when it has died.

The worker runs :func:`monai_anon_app.server.worker_loop.serve` at the other end of a pipe. Every call here
blocks (call it from a thread, never from the event loop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from typing import Any

from monai_anon_app.server.jobs import Job
from monai_anon_app.server.worker_loop import Outcome, serve

__all__ = ["WorkerCrashed", "WorkerGone", "WorkerProcess", "WorkerTimeout"]

logger = logging.getLogger(__name__)


class WorkerGone(Exception):
    """The worker died before it started the job: the job may run in another worker."""


class WorkerCrashed(Exception):
    """The worker died while running the job (out of memory, a crash in native code)."""


class WorkerTimeout(Exception):
    """The job did not finish in time; the worker has been killed."""


class WorkerProcess:
    """One worker process and the pipe to it."""

    def __init__(self, ctx: BaseContext, threads: int, niceness: int, model_base: str | None,
                 publish_root: str) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=serve, name="inference-worker", daemon=True,
                                   args=(child, threads, niceness, os.getpid(), model_base, publish_root))
        self.process.start()
        child.close()  # only the worker holds its end: its death closes the pipe
        self.ready = False
        self.loaded = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        """False once the process has ended (checked without waiting)."""
        return self.process.is_alive()

    def _receive(self, deadline: float) -> Any:
        """The worker's next message; :class:`WorkerGone` if it died, :class:`TimeoutError` at ``deadline``."""
        ready = wait([self.conn, self.process.sentinel], timeout=max(0.0, deadline - time.monotonic()))
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                raise WorkerGone() from None
        if ready:
            raise WorkerGone()
        raise TimeoutError()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the worker has loaded the model (or found none); False if it died or timed out."""
        if self.ready:
            return True
        try:
            _, self.loaded = self._receive(time.monotonic() + timeout_s)
        except (WorkerGone, TimeoutError):
            return False
        self.ready = True
        return True

    def run(self, job: Job, timeout_s: float) -> Outcome:
        """Run ``job``: its :data:`~monai_anon_app.server.worker_loop.Outcome`, or :class:`WorkerGone` (never
        started), :class:`WorkerCrashed` (died running it) or :class:`WorkerTimeout` (killed after
        ``timeout_s``, start-up included)."""
        deadline = time.monotonic() + timeout_s
        try:
            if not self.ready:
                self._receive(deadline)
                self.ready = True
            self.conn.send(job)
            self._receive(deadline)  # ("started",)
        except (WorkerGone, BrokenPipeError, ConnectionError, EOFError):
            raise WorkerGone() from None
        except TimeoutError:
            self.kill()
            raise WorkerTimeout() from None
        try:
            return self._receive(deadline)
        except WorkerGone:
            raise WorkerCrashed() from None
        except TimeoutError:
            self.kill()
            raise WorkerTimeout() from None

    def kill(self) -> None:
        """SIGKILL the process and close the pipe."""
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
            self.process.join(10)
        self.conn.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask an idle worker to end; kill it if it does not within ``timeout_s``."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(None)
            self.process.join(timeout_s)
        if self.process.is_alive():
            self.kill()
        self.conn.close()
