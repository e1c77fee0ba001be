"""The batch loop on a Dask cluster: an embedded local one (``workers``) or an existing one (``scheduler``).

``process_files_on_dask(pairs, factory, cluster)`` gives the same :class:`~monai_anon_app.runner.loop.Summary`
as :func:`~monai_anon_app.runner.loop.process_files` with ``factory()`` as the handler. ``factory`` is a
picklable callable that builds the handler; a worker plugin calls it once per worker (a worker that joins
later, e.g. to replace a lost one, too), so a model is loaded once per worker, not once per file. Files
travel in chunks (a few per worker, so the scheduler is not the bottleneck); a chunk that was running on
a lost worker is run again elsewhere and its files are counted once. With a :class:`Journal`, files a
previous run of the same arguments finished are skipped and counted from the journal, and each finished
chunk is recorded as it arrives, so an interrupted run can be started again.
"""

from __future__ import annotations

import logging
import math
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from tqdm import tqdm

from monai_anon_app.runner.journal import Journal
from monai_anon_app.runner.loop import Outcome, Summary, describe_failure, outcome_of

__all__ = ["ClusterOptions", "process_files_on_dask"]

#: environment of the embedded cluster's workers: glibc's own malloc trimming (see :func:`_client`)
LOCAL_WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: what a resumed file's reason says
RESUMED = "finished by an earlier run of the same arguments"


@dataclass(frozen=True)
class ClusterOptions:
    """Where a batch runs: ``workers`` processes of an embedded local cluster (bound to 127.0.0.1), or the
    existing cluster whose scheduler is at ``scheduler`` (``tcp://HOST:PORT``)."""

    workers: int | None = None
    scheduler: str | None = None
    #: files per task; default: about four tasks per worker, at most 64 files each
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if (self.workers is None) == (self.scheduler is None):
            raise ValueError("give either --workers N or --scheduler ADDRESS")
        if self.workers is not None and self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError("the chunk size must be at least 1")


class _HandlerPlugin(WorkerPlugin):
    """Builds the batch's handler once on each worker."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]) -> None:
        self.factory = factory
        self.handler: Callable[[Any], Any] | None = None

    def setup(self, worker: Any) -> None:
        self.handler = self.factory()


def _run_chunk(plugin: str, items: list[Any], refuse: tuple[type[BaseException], ...],
               fatal: tuple[type[BaseException], ...]) -> list[Outcome]:
    """Runs on a worker: the outcome of each item of a chunk, with the handler its plugin built."""
    handler = get_worker().plugins[plugin].handler
    return [outcome_of(handler, item, refuse, fatal) for item in items]


def _chunk_outcomes(future: Any, n: int, fatal: tuple[type[BaseException], ...]) -> list[Outcome]:
    """The outcomes of a finished chunk; when the chunk itself failed (its workers kept dying: Dask gives up
    after a few tries), each of its files failed with that reason. A ``fatal`` error stops the batch."""
    try:
        return future.result()
    except fatal:
        raise
    except Exception as exc:
        return [Outcome("failed", f"the Dask task processing it failed ({describe_failure(exc)})")] * n


@contextmanager
def _client(cluster: ClusterOptions) -> Iterator[Client]:
    if cluster.scheduler is not None:
        with Client(cluster.scheduler) as client:
            yield client
        return
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 hands freed memory back to the system at once, which costs
    # a process that allocates and frees image buffers for every file (one process given that setting:
    # 600 anonymized files in 31.4 s against 25.5 s without it)
    with dask.config.set(LOCAL_WORKER_ENVIRON), \
            LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, silence_logs=logging.CRITICAL) as local, Client(local) as client:
        yield client


def process_files_on_dask(pairs: Sequence[tuple[str, Path]], factory: Callable[[], Callable[[Path], Any]],
                          cluster: ClusterOptions, *, desc: str = "files", progress: bool = True,
                          refuse: tuple[type[BaseException], ...] = (),
                          fatal: tuple[type[BaseException], ...] = (), journal: Journal | None = None,
                          on_done: Callable[[Path, Outcome], None] | None = None) -> Summary:
    """Run ``factory()`` on every file of ``pairs`` on ``cluster`` (see the module docstring).
    ``on_done(path, outcome)`` runs here, in the calling process, for each file as its chunk arrives and
    before the journal records it (e.g. to append to a mapping file)."""
    finished = journal.finished() if journal is not None else {}
    outcomes: dict[int, Outcome] = {}
    digests: list[str] = []
    todo: list[int] = []
    for i, (_, path) in enumerate(pairs):
        try:
            digests.append(journal.digest(path) if journal is not None else "")
        except OSError as exc:  # gone or unreadable since it was listed
            digests.append("")
            outcomes[i] = Outcome("failed", describe_failure(exc))
            continue
        if digests[i] in finished:
            kind, label = finished[digests[i]]
            outcomes[i] = Outcome(kind, None if kind == "done" else RESUMED, label)
        else:
            todo.append(i)
    if todo:
        with _client(cluster) as client:
            workers = max(1, len(client.scheduler_info().get("workers", {})) or (cluster.workers or 1))
            size = cluster.chunk_size or max(1, min(64, math.ceil(len(todo) / (4 * workers))))
            chunks = [todo[k:k + size] for k in range(0, len(todo), size)]
            plugin = f"monai-anon-{uuid.uuid4().hex}"
            client.register_plugin(_HandlerPlugin(factory), name=plugin)
            try:
                futures = {client.submit(_run_chunk, plugin, [pairs[i][1] for i in chunk], refuse, fatal,
                                         pure=False): chunk for chunk in chunks}
                bar = tqdm(total=len(todo), unit="file", desc=desc, disable=not progress or len(todo) < 2,
                           file=sys.stderr)
                for future in as_completed(futures):
                    chunk = futures[future]
                    for i, outcome in zip(chunk, _chunk_outcomes(future, len(chunk), fatal)):
                        outcomes[i] = outcome
                        if on_done is not None:
                            on_done(pairs[i][1], outcome)
                    if journal is not None:
                        journal.record((digests[i], outcomes[i].kind, outcomes[i].label) for i in chunk)
                    bar.update(len(chunk))
                bar.close()
            finally:
                if journal is not None:
                    journal.sync()
                with suppress(OSError, TimeoutError, RuntimeError):  # a cluster already gone holds no plugin
                    client.unregister_worker_plugin(plugin)
    summary: Summary = Summary()
    for i, (name, _) in enumerate(pairs):
        summary.add(name, outcomes[i])
    return summary
