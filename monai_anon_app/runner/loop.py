"""One loop over a batch of files in this process, behind ``deid``, ``anonymize``, ``counterfactual`` and the
DICOM export.

``process_files(pairs, handler)`` calls ``handler(item)`` for every ``(name, item)`` pair and sorts each
outcome into a :class:`Summary`: done (with the handler's result), refused (:class:`Refused`, or an error
type the caller names: the model cannot take the file), skipped (:class:`Skipped`: not an object to
process, never copied) or failed (anything else: one bad file never stops the batch). Error types the
caller calls ``fatal`` stop the batch (no model: nothing can be done). ``name`` is what summaries and
messages call the file. Torch-free.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from monai_anon_app.errors import InputError

__all__ = ["Outcome", "Refused", "Skipped", "Summary", "describe_failure", "outcome_of", "process_files"]

T = TypeVar("T")
R = TypeVar("R")


class Refused(Exception):
    """The model cannot take this file; the message is the reason, one sentence."""


class Skipped(Refused):
    """Not an object to process at all: counted as skipped (under ``label``), not refused."""

    def __init__(self, message: str, label: str = "skipped") -> None:
        super().__init__(message, label)
        self.label = label

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Outcome:
    """What became of one file: ``kind`` done (``value`` the handler's result), refused, skipped or failed
    (``value`` the reason); ``label`` is what a skipped file is counted as."""

    kind: str
    value: Any
    label: str = ""


@dataclass
class Summary(Generic[R]):
    """What happened to each file of a batch: ``(name, result)`` when done, ``(name, reason)`` otherwise."""

    results: list[tuple[str, R]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skip_labels: Counter = field(default_factory=Counter)  # label -> count

    def add(self, name: str, outcome: Outcome) -> None:
        if outcome.kind == "done":
            self.results.append((name, outcome.value))
        elif outcome.kind == "skipped":
            self.skipped.append((name, outcome.value))
            self.skip_labels[outcome.label] += 1
        else:
            getattr(self, outcome.kind).append((name, outcome.value))

    @property
    def done(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        """Nothing refused and nothing failed."""
        return not self.refused and not self.failed

    def line(self, command: str, *, refusals: bool = True) -> str:
        """``command: N done, R refused, F failed, S skipped (why)``; without ``refusals`` (a command that
        refuses nothing) ``command: N done, S skipped (why), F failed``."""
        n_skip = sum(self.skip_labels.values())
        why = f" ({', '.join(f'{n} {r}' for r, n in self.skip_labels.most_common())})" if n_skip else ""
        if not refusals:
            return f"{command}: {self.done} done, {n_skip} skipped{why}, {len(self.failed)} failed"
        return (f"{command}: {self.done} done, {len(self.refused)} refused, {len(self.failed)} failed, "
                f"{n_skip} skipped{why}")


def describe_failure(exc: BaseException) -> str:
    """One line for a failed file: the message of a user-facing error, else the error type and message."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (InputError, ValueError, OSError)):
        return text
    return f"{exc.__class__.__name__}: {text[:200]}"


def outcome_of(handler: Callable[[T], R], item: T, refuse: tuple[type[BaseException], ...] = (),
               fatal: tuple[type[BaseException], ...] = ()) -> Outcome:
    """``handler(item)`` as an :class:`Outcome`; errors of a ``fatal`` type propagate."""
    try:
        return Outcome("done", handler(item))
    except Skipped as exc:
        return Outcome("skipped", str(exc), exc.label)
    except fatal:
        raise
    except (Refused, *refuse) as exc:
        return Outcome("refused", str(exc))
    except Exception as exc:  # one bad file must not stop the batch
        return Outcome("failed", describe_failure(exc))


def process_files(pairs: Sequence[tuple[str, T]], handler: Callable[[T], R], *, desc: str = "files",
                  progress: bool = True, refuse: tuple[type[BaseException], ...] = (),
                  fatal: tuple[type[BaseException], ...] = ()) -> Summary[R]:
    """Run ``handler`` on every item of ``pairs`` (see the module docstring); a progress bar on stderr
    for two files or more unless ``progress`` is false."""
    summary: Summary[R] = Summary()
    for name, item in tqdm(pairs, unit="file", desc=desc, disable=not progress or len(pairs) < 2, file=sys.stderr):
        summary.add(name, outcome_of(handler, item, refuse, fatal))
    return summary
