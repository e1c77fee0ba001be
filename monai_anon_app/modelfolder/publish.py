"""Publishing model folders without a restart: a root folder whose ``current`` file names the folder in use.

::

    <publish root>/
        current              text file: the name of the published folder in use (replaced atomically)
        v20250101-120000-1/  a complete model folder (config.yaml, model.pt, …)
        .staging-*/          training in progress

Every process resolves the folder on each use from the ``current`` file's content, so a reader never sees
a half-written model: a folder is staged, completed, moved into place, and only then named in ``current``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from monai_anon_app.imageio.images import atomic_write
from monai_anon_app.modelfolder.folder import is_complete

__all__ = ["KEEP_VERSIONS", "POINTER", "PublishRoot"]

POINTER = "current"
KEEP_VERSIONS = 3


class PublishRoot:
    """A writable folder where training publishes finished model folders (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def published(self) -> Path | None:
        """The published folder named by ``current`` (None when nothing was published)."""
        try:
            name = (self.root / POINTER).read_text().strip()
        except OSError:
            return None
        folder = self.root / name
        return folder if name and "/" not in name and is_complete(folder) else None

    def staging_dir(self) -> Path:
        """A fresh folder inside the publish root for a training run to write into."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def publish(self, staged: Path) -> Path:
        """Move the complete model folder ``staged`` into place and make it current (atomically)."""
        if not is_complete(staged):
            raise ValueError(f"{staged} is not a complete model folder")
        self.root.mkdir(parents=True, exist_ok=True)
        name = time.strftime("v%Y%m%d-%H%M%S")
        n = 1
        while (self.root / f"{name}-{n}").exists():
            n += 1
        target = self.root / f"{name}-{n}"
        for stale in ("checkpoint.pt",):
            (staged / stale).unlink(missing_ok=True)
        os.replace(staged, target)
        atomic_write(self.root / POINTER, lambda tmp: Path(tmp).write_text(target.name + "\n"))
        self._prune(keep=target.name)
        return target

    def _prune(self, keep: str) -> None:
        versions = sorted(p for p in self.root.glob("v*") if p.is_dir() and p.name != keep)
        for old in versions[: max(0, len(versions) - (KEEP_VERSIONS - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    def clean_staging(self, older_than_s: float = 0.0) -> None:
        """Remove staging folders left by stopped or failed training runs."""
        now = time.time()
        for d in self.root.glob(".staging-*"):
            if d.is_dir() and now - d.stat().st_mtime >= older_than_s:
                shutil.rmtree(d, ignore_errors=True)
