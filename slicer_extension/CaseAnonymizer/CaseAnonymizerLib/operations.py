"""A server call in progress and what it produced.

:class:`Operation` pairs a background :class:`~CaseAnonymizerLib.jobs.Job` (network only) with the step that
finishes it on the main thread (MRML); :class:`Outcome` is the result the panel and tests read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .jobs import Job

__all__ = ["Operation", "Outcome"]


@dataclass
class Operation:
    """A started server call: ``job`` runs on a worker thread, ``complete()`` finishes on the main thread."""

    name: str
    job: Job[Any]
    finish: Callable[[Any], Any]

    def complete(self) -> Any:
        """The outcome (nodes in the scene); raises the job's error, or :class:`CancelledError`."""
        return self.finish(self.job.result())


@dataclass
class Outcome:
    """What an operation produced, for the panel and for tests."""

    operation: str
    details: dict[str, Any]
    summary: str
    nodes: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
