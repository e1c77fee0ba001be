"""Inference worker processes, so a slow inference never blocks the server's event loop.

MONAI Label calls infer tasks inside its asyncio event loop: one slow request freezes ``/info`` and
every other client. The REST endpoint instead awaits :meth:`InferencePool.run`, which hands the job to
one of ``workers`` worker processes (:class:`~monai_anon_app.server.worker_process.WorkerProcess`):

* started through a *fork server* that imports torch and the inference code once (``preload``), so
  workers start in well under a second and share those pages;
* started and warmed (model loaded) by :meth:`InferencePool.start` before the server accepts requests,
  so the first request is as fast as the second;
* ``infer_threads`` torch threads each (one per core by default: more threads than cores make torch's
  OpenMP pool spin against itself and other processes), optionally a lower CPU priority (``nice``);
* a bounded queue (``max_pending``): beyond it requests get 503 at once instead of piling up;
* a dead worker (killed by the out-of-memory killer, a segfault) is noticed before it is handed work
  and replaced; a job sent to a worker that died before starting it runs in another one. Only the
  request whose own run killed a worker fails, with 503 and ``Retry-After``; the other workers and
  their requests go on;
* workers end themselves when the server process is gone (even after SIGKILL), and the fork server
  with them.

With ``workers=0`` jobs run in threads of the server process (for debugging; torch releases the GIL in
its kernels, but Python-level work then competes with the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from typing import Any

import anyio

from monai_anon_app.server.jobs import Job
from monai_anon_app.server.request_errors import RequestError
from monai_anon_app.server.worker_loop import Outcome, execute
from monai_anon_app.server.worker_process import WorkerCrashed, WorkerGone, WorkerProcess, WorkerTimeout

__all__ = ["InferencePool"]

logger = logging.getLogger(__name__)
PRELOAD = ["monai_anon_app.server.preload"]
#: How often a job whose worker died before starting it is handed to a fresh worker.
ATTEMPTS = 3
#: Seconds a client should wait before sending a request again after a 503.
RETRY_AFTER_S = 5
CRASHED = ("An inference worker stopped while running this request (out of memory?); it has been replaced: "
           "send the request again")


class InferencePool:
    """A bounded queue in front of ``workers`` inference processes."""

    def __init__(self, workers: int, threads: int, max_pending: int, timeout_s: float = 600.0,
                 niceness: int = 0, model_base: str | None = None, publish_root: str = "") -> None:
        self.workers, self.threads, self.max_pending = workers, threads, max_pending
        self.timeout_s, self.niceness = timeout_s, niceness
        self.model_base, self.publish_root = model_base, publish_root
        self.pending = 0
        self.completed = 0
        self.replaced = 0
        self.loaded = 0  # workers that loaded the model at start-up
        self._all: set[WorkerProcess] = set()
        self._idle: asyncio.Queue[WorkerProcess] | None = None
        self._starting: asyncio.Lock | None = None
        self._lock = threading.Lock()
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)

    # -- workers ---------------------------------------------------------------------------------
    def _spawn(self) -> WorkerProcess:
        """A new worker process (it loads the model on its own; blocking)."""
        worker = WorkerProcess(self._ctx, self.threads, self.niceness, self.model_base, self.publish_root)
        with self._lock:
            self._all.add(worker)
        return worker

    def _discard(self, worker: WorkerProcess) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def _start_all(self) -> list[WorkerProcess]:
        workers = [self._spawn() for _ in range(self.workers)]
        ready = [w.wait_ready(self.timeout_s) for w in workers]
        self.loaded = sum(w.loaded for w in workers)
        if not all(ready):
            logger.warning("only %d of %d inference workers started", sum(ready), self.workers)
        return workers

    async def start(self) -> None:
        """Start the workers and load the model in each; returns when they are warm (idempotent)."""
        if self.workers <= 0 or self._idle is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._idle is not None:
                return
            workers = await anyio.to_thread.run_sync(self._start_all)
            idle: asyncio.Queue[WorkerProcess] = asyncio.Queue()
            for w in workers:
                idle.put_nowait(w)
            self._idle = idle

    async def _acquire(self) -> WorkerProcess:
        """An idle worker that is alive (a dead one is replaced first)."""
        await self.start()
        assert self._idle is not None
        worker = await self._idle.get()
        if worker.alive():
            return worker
        logger.warning("inference worker %s had died while idle (exit code %s); starting another",
                       worker.pid, worker.process.exitcode)
        return await self._replace(worker)

    async def _replace(self, worker: WorkerProcess) -> WorkerProcess:
        """A new worker in place of ``worker``; if the request is cancelled meanwhile, the new worker still
        joins the idle queue (the pool never shrinks)."""
        self._discard(worker)
        self.replaced += 1
        spawned = asyncio.get_running_loop().run_in_executor(None, self._spawn)
        try:
            return await asyncio.shield(spawned)
        except asyncio.CancelledError:
            spawned.add_done_callback(self._enqueue_spawned)
            raise
        except Exception:
            self._idle.put_nowait(worker)  # a dead placeholder: the next request tries again
            raise

    def _enqueue_spawned(self, spawned: asyncio.Future) -> None:
        if not spawned.cancelled() and spawned.exception() is None:
            self._idle.put_nowait(spawned.result())

    def describe(self) -> str:
        """One line for the log: how inference runs."""
        if self.workers <= 0:
            return "inference in threads of the server process"
        return f"{self.workers} inference workers, model loaded in {self.loaded}"

    def status(self) -> dict[str, Any]:
        with self._lock:
            pids = sorted(w.pid for w in self._all if w.pid is not None)
        return {"workers": self.workers, "threads_per_worker": self.threads, "pending": self.pending,
                "completed": self.completed, "max_pending": self.max_pending, "replaced": self.replaced,
                "pids": pids}

    # -- jobs --------------------------------------------------------------------------------------
    async def run(self, job: Job) -> tuple[Any, dict[str, Any]]:
        """Run ``job`` in a worker: ``(result, info)`` where ``result`` is None, ``(name, bytes)`` or a file
        path (see :func:`~monai_anon_app.server.worker_loop.execute`); :class:`RequestError` on failure."""
        if self.pending >= self.max_pending:
            raise RequestError(503, f"the server is busy ({self.pending} requests queued); try again shortly",
                               retry_after=RETRY_AFTER_S)
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

    async def _run_in_process(self, job: Job) -> Outcome:
        for _ in range(ATTEMPTS):
            worker = await self._acquire()
            try:
                outcome = await anyio.to_thread.run_sync(worker.run, job, self.timeout_s)
            except WorkerGone:
                logger.warning("inference worker %s died before it started the %s job; running it in another worker",
                               worker.pid, job.task)
                worker = await self._replace(worker)
                self._idle.put_nowait(worker)
                continue
            except WorkerCrashed:
                worker.kill()  # reaps it: its exit code is known
                logger.error("inference worker %s died while running the %s job (exit code %s); replacing it",
                             worker.pid, job.task, worker.process.exitcode)
                self._idle.put_nowait(await self._replace(worker))
                raise RequestError(503, CRASHED, retry_after=RETRY_AFTER_S) from None
            except WorkerTimeout:
                self._idle.put_nowait(await self._replace(worker))
                raise RequestError(504, f"The {job.task} task took longer than {self.timeout_s:.0f} s") from None
            except BaseException:
                self._idle.put_nowait(worker)
                raise
            self._idle.put_nowait(worker)
            return outcome
        raise RequestError(503, "No inference worker could run this request (they keep stopping); see the server "
                                "log", retry_after=RETRY_AFTER_S)

    def shutdown(self) -> None:
        """Stop every worker (blocking)."""
        with self._lock:
            workers, self._all = list(self._all), set()
        for w in workers:
            w.stop()
