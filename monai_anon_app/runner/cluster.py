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

import math
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from tqdm import tqdm

from monai_anon_app.runner.journal import Journal
from monai_anon_app.runner.loop import Outcome, Summary, outcome_of

__all__ = ["ClusterOptions", "process_files_on_dask"]

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


@contextmanager
def _client(cluster: ClusterOptions) -> Iterator[Client]:
    if cluster.scheduler is not None:
        with Client(cluster.scheduler) as client:
            yield client
        return
    with LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
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
    digests = [journal.digest(path) for _, path in pairs] if journal is not None else [""] * len(pairs)
    outcomes: dict[int, Outcome] = {}
    todo: list[int] = []
    for i, digest in enumerate(digests):
        if digest in finished:
            kind, label = finished[digest]
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
                    for i, outcome in zip(chunk, future.result()):
                        outcomes[i] = outcome
                        if on_done is not None:
                            on_done(pairs[i][1], outcome)
                    if journal is not None:
                        journal.record((digests[i], outcomes[i].kind, outcomes[i].label) for i in chunk)
                    bar.update(len(chunk))
                bar.close()
            finally:
                with suppress(OSError, TimeoutError, RuntimeError):  # a cluster already gone holds no plugin
                    client.unregister_worker_plugin(plugin)
    summary: Summary = Summary()
    for i, (name, _) in enumerate(pairs):
        summary.add(name, outcomes[i])
    return summary
