"""Entry points of the inference worker processes (imported by the fork server, so kept importable fast
enough: heavy modules load once there and are shared by every worker it forks).

A worker process runs :func:`serve`: it loads the model, says ``("ready", loaded)``, then for each job it
receives says ``("started",)`` before running it and sends the :data:`Outcome` after. The server's pool
(:mod:`monai_anon_app.server.worker_process`) relies on that order to tell a job that never started (sent to a
worker that had died: run it elsewhere) from one whose own run killed the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import psutil
import torch

from monai_anon_app.server.infer import run_job
from monai_anon_app.server.jobs import Job, store_for
from monai_anon_app.server.request_errors import as_request_error
from monai_anon_app.server.settings import INLINE_RESULT_BYTES

__all__ = ["execute", "init_worker", "serve", "warm"]

logger = logging.getLogger(__name__)

Outcome = tuple[str, Any, Any]


def init_worker(threads: int, niceness: int, server_pid: int | None = None) -> None:
    """Per-process set-up: a fixed number of torch threads, optionally a lower CPU priority than the
    server's (its event loop comes first while workers compute), and a watchdog that ends the worker
    when the server process is gone, even if it was killed without a chance to stop its pool (a
    ProcessPoolExecutor worker otherwise waits for work forever, and keeps the fork server alive)."""
    torch.set_num_threads(max(1, threads))
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    if server_pid:
        threading.Thread(target=_exit_with, args=(server_pid,), name="server-watchdog", daemon=True).start()


def _exit_with(server_pid: int, interval_s: float = 1.0) -> None:
    try:
        server = psutil.Process(server_pid)
    except psutil.Error:
        os._exit(0)
    while True:
        time.sleep(interval_s)
        if not server.is_running() or server.status() == psutil.STATUS_ZOMBIE:
            os._exit(0)


def warm(model_base: str | None, publish_root: str) -> bool:
    """Load the current model now, so the first request does not pay for it."""
    try:
        store_for(model_base, publish_root).anonymizer()
        return True
    except Exception:  # no model yet: requests will say so
        return False


def serve(conn: Connection, threads: int, niceness: int, server_pid: int | None, model_base: str | None,
          publish_root: str) -> None:
    """Main loop of a worker process (see the module docstring); ends on ``None`` or when the server is gone."""
    init_worker(threads, niceness, server_pid)
    conn.send(("ready", warm(model_base, publish_root)))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the server closed its end
            return
        if job is None:
            return
        conn.send(("started",))
        conn.send(execute(job))


def execute(job: Job) -> Outcome:
    """Run ``job``; never raises: ``("ok", result, info)`` or ``("error", status, message)``.

    ``result`` is None (JSON only), ``(file name, bytes)`` for results up to
    :data:`~monai_anon_app.server.settings.INLINE_RESULT_BYTES` (the file is removed), or the path of a larger
    result file."""
    try:
        path, info = run_job(job)
        if isinstance(path, str) and os.path.getsize(path) <= INLINE_RESULT_BYTES:
            with open(path, "rb") as fh:
                data = fh.read()
            os.unlink(path)
            return "ok", (os.path.basename(path), data), info
        return "ok", path, info
    except Exception as exc:
        mapped = as_request_error(exc)
        if mapped is not None:
            return "error", mapped.status, mapped.message
        logger.error("inference failed:\n%s", traceback.format_exc())
        return "error", 500, f"The {job.task} task failed on the server ({exc.__class__.__name__}); see the server log."
