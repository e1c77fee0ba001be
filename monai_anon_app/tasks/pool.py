"""Inference worker processes, so a slow inference never blocks the server's event loop.

MONAI Label calls infer tasks inside its asyncio event loop: one slow request freezes ``/info`` and
every other client. The REST endpoint instead awaits :meth:`InferencePool.run`, which hands the job to
a pool of worker processes:

* started through a *fork server* that imports torch and the inference code once (``preload``), so
  workers start in well under a second and share those pages;
* ``infer_threads`` torch threads each (one per core by default: more threads than cores make torch's
  OpenMP pool spin against itself and other processes), optionally a lower CPU priority (``nice``);
* a bounded queue (``max_pending``): beyond it requests get 503 at once instead of piling up;
* a crashed worker (out of memory, segfault) fails only its request (500), and the pool is rebuilt;
* workers end themselves when the server process is gone (even after SIGKILL), and the fork server
  with them.

With ``workers=0`` jobs run in threads of the server process (for debugging; torch releases the GIL in
its kernels, but Python-level work then competes with the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio

from .engine import Job
from .errors import RequestError
from .worker import execute, init_worker, warm

__all__ = ["InferencePool"]

logger = logging.getLogger(__name__)
PRELOAD = ["monai_anon_app.tasks.preload"]


class InferencePool:
    """A bounded queue in front of ``workers`` inference processes."""

    def __init__(self, workers: int, threads: int, max_pending: int, timeout_s: float = 600.0,
                 niceness: int = 0) -> None:
        self.workers, self.threads, self.max_pending = workers, threads, max_pending
        self.timeout_s, self.niceness = timeout_s, niceness
        self.pending = 0
        self.completed = 0
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _make_executor(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=init_worker,
                                   initargs=(self.threads, self.niceness, os.getpid()))

    def executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = self._make_executor()
            return self._executor

    def start(self, model_base: str | None, publish_root: str) -> None:
        """Start the workers and load the model in each (blocking: call from a background thread)."""
        if self.workers <= 0:
            return
        try:
            ex = self.executor()
            futures = [ex.submit(warm, model_base, publish_root) for _ in range(self.workers)]
            loaded = [f.result() for f in futures]
            logger.info("inference workers ready: %d (model loaded: %s)", len(loaded), all(loaded))
        except Exception as exc:  # the first request will retry
            logger.warning("could not start the inference workers: %s", exc)

    def status(self) -> dict[str, Any]:
        return {"workers": self.workers, "threads_per_worker": self.threads, "pending": self.pending,
                "completed": self.completed, "max_pending": self.max_pending}

    async def run(self, job: Job) -> tuple[Any, dict[str, Any]]:
        """Run ``job`` in a worker: ``(result, info)`` where ``result`` is None, ``(name, bytes)`` or a file
        path (see :func:`~monai_anon_app.tasks.worker.execute`); :class:`RequestError` on failure."""
        if self.pending >= self.max_pending:
            raise RequestError(503, f"the server is busy ({self.pending} requests queued); try again shortly")
        self.pending += 1
        try:
            if self.workers <= 0:
                outcome = await anyio.to_thread.run_sync(execute, job)
            else:
                outcome = await self._run_in_process(job)
        finally:
            self.pending -= 1
            self.completed += 1
        kind, a, b = outcome
        if kind == "ok":
            return a, b
        raise RequestError(int(a), str(b))

    async def _run_in_process(self, job: Job) -> tuple[str, Any, Any]:
        try:
            future = await anyio.to_thread.run_sync(self.executor().submit, execute, job)
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_s)
        except BrokenProcessPool:
            logger.error("an inference worker died; rebuilding the pool")
            self._reset()
            return "error", 500, "An inference worker crashed (out of memory?) while running this request."
        except asyncio.TimeoutError:
            return "error", 504, f"The {job.task} task took longer than {self.timeout_s:.0f} s."

    def _reset(self) -> None:
        with self._lock:
            old, self._executor = self._executor, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            old, self._executor = self._executor, None
        if old is not None:
            old.shutdown(wait=True, cancel_futures=True)
