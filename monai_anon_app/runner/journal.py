"""What a batch has finished, so that a run interrupted and started again with the same arguments skips it.

The journal is one hidden file in the output folder, appended to as files finish: each write reaches the
operating system at once, so a killed process (Ctrl-C, a killed client or worker) loses none of it; it is
forced to disk (``fsync``) at most every ``sync_every`` seconds and at the end, which bounds what a power
cut can make a new run redo (redone files are rewritten whole, with the same content).
Each line is ``<digest> <kind> <label>``: ``digest`` is an HMAC-SHA256, under the run's secret key, of the
run's fingerprint (command and every option that changes an output) and the input file's absolute path,
size and modification time; ``kind`` is ``done`` or ``skipped``. It holds no names, paths or identifiers:
without the key nobody can tell which input a line stands for. Refused and failed files are not recorded:
a new run tries them again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["JOURNAL_NAME", "Journal"]

JOURNAL_NAME = ".monai-anon-journal"
RECORDED = ("done", "skipped")


class Journal:
    """The journal of a run writing into ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, key: bytes, fingerprint: str, sync_every: float = 2.0) -> None:
        self.path = Path(folder) / JOURNAL_NAME
        self._key = hmac.new(key, b"monai-anon journal " + fingerprint.encode(), hashlib.sha256).digest()
        self.sync_every = sync_every
        self._synced = time.monotonic()

    def digest(self, path: str | os.PathLike) -> str:
        """The line key of the input file ``path`` in this run."""
        p = Path(path).resolve()
        st = p.stat()
        return hmac.new(self._key, f"{p}\0{st.st_size}\0{st.st_mtime_ns}".encode(), hashlib.sha256).hexdigest()

    def finished(self) -> dict[str, tuple[str, str]]:
        """``digest -> (kind, label)`` of every file a previous run of the same arguments finished."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        done = {}
        for line in lines:
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] in RECORDED:
                done[parts[0]] = (parts[1], parts[2])
        return done

    def record(self, entries: Iterable[tuple[str, str, str]]) -> None:
        """Append ``(digest, kind, label)`` entries of finished files (forced to disk when the last ``fsync``
        is ``sync_every`` seconds old)."""
        lines = [f"{d} {kind} {label}\n" for d, kind, label in entries if kind in RECORDED]
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write("".join(lines))
            fh.flush()
            if time.monotonic() - self._synced >= self.sync_every:
                self._fsync(fh)

    def sync(self) -> None:
        """Force what was recorded to disk (at the end of a run)."""
        if self.path.is_file():
            with open(self.path, "a") as fh:
                self._fsync(fh)

    def _fsync(self, fh) -> None:
        os.fsync(fh.fileno())
        self._synced = time.monotonic()
