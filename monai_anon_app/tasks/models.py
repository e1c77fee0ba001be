"""Which model folder the infer tasks serve, and how training publishes a new one without a restart.

A :class:`ModelStore` has a *base* model folder (``--model``; may be absent) and a *publish root*, a
writable folder where training drops finished model folders::

    <publish root>/
        current              text file: the name of the published folder in use (replaced atomically)
        v20250101-120000-1/  a complete model folder (config.yaml, model.pt, …)
        .staging-*/          training in progress

The newest published folder wins over the base folder. Every process (server, inference workers,
training subprocesses) resolves the folder on each use from the ``current`` file's content, so new
weights are picked up at the next request; loaded models are cached per folder and file times.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..data.io import atomic_write
from ..inference.model_dir import MODEL_FILES

__all__ = ["ModelStore", "model_complete"]

POINTER = "current"
KEEP_VERSIONS = 3


def model_complete(folder: Path | None) -> bool:
    """True when ``folder`` holds every file a model folder needs."""
    return folder is not None and folder.is_dir() and all((folder / n).is_file() for n in MODEL_FILES)


class ModelStore:
    """The served model folder: newest published training result, else the base folder."""

    def __init__(self, base: str | os.PathLike | None, publish_root: str | os.PathLike) -> None:
        self.base = Path(base) if base else None
        self.root = Path(publish_root)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, Any]] = {}

    # -- where ------------------------------------------------------------------------------------
    def published(self) -> Path | None:
        """The published folder named by ``current`` (None when nothing was published)."""
        try:
            name = (self.root / POINTER).read_text().strip()
        except OSError:
            return None
        folder = self.root / name
        return folder if name and "/" not in name and model_complete(folder) else None

    def current_dir(self) -> Path | None:
        """The folder to serve now, or None when there is no complete model."""
        published = self.published()
        if published is not None:
            return published
        return self.base if model_complete(self.base) else None

    def available(self) -> bool:
        return self.current_dir() is not None

    def name(self) -> str:
        """A short name: the base folder's name, with the published version when there is one."""
        base = self.base.name if self.base else "model"
        published = self.published()
        return f"{base}@{published.name}" if published is not None else base

    @staticmethod
    def stamp(folder: Path) -> tuple:
        """Identity of a folder's current content (paths and file times), cheap to compute."""
        parts: list[Any] = [str(folder)]
        for n in MODEL_FILES:
            st = (folder / n).stat()
            parts += [st.st_mtime_ns, st.st_size]
        return tuple(parts)

    def _cached(self, key: str, folder: Path, make) -> Any:
        stamp = self.stamp(folder)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        value = make(folder)
        with self._lock:
            self._cache[key] = (stamp, value)
        return value

    # -- what ----------------------------------------------------------------------------------------
    def require(self) -> Path:
        from ..errors import ModelError

        folder = self.current_dir()
        if folder is None:
            where = f"{self.base}" if self.base else "no model folder was configured"
            raise ModelError(f"no trained model is available ({where}); train one with POST /train/disentangler "
                             "or `monai-anon train` and start the server with --model")
        return folder

    def config(self):
        """The served model's :class:`~monai_anon_app.training.config.TrainConfig` (None without a model)."""
        from ..training.config import load_config

        folder = self.current_dir()
        return None if folder is None else self._cached("config", folder, lambda f: load_config(f / "config.yaml"))

    def checksum(self) -> str | None:
        from ..inference import checksum

        folder = self.current_dir()
        return None if folder is None else self._cached("checksum", folder, checksum)

    def anonymizer(self):
        """The loaded :class:`~monai_anon_app.inference.Anonymizer` for the current folder (cached)."""
        from ..errors import ModelError
        from ..inference import Anonymizer

        def load(f: Path):
            try:
                return Anonymizer.load(f)
            except ModelError as exc:  # clients are told the folder's name, not where it lies on the server
                raise ModelError(str(exc).replace(str(f), f.name).replace(str(f.resolve()), f.name)) from exc
            except (RuntimeError, KeyError, ValueError, TypeError, OSError) as exc:
                raise ModelError(f"the model folder {f.name} cannot be loaded by this version of monai-anon "
                                 f"({exc.__class__.__name__}); retrain it") from exc

        folder = self.require()
        return self._cached("anonymizer", folder, load)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for ``/info``."""
        cfg = self.config()
        if cfg is None:
            return {"name": self.name(), "available": False}
        return {"name": self.name(), "available": True, "checksum": self.checksum(), "classes": list(cfg.classes),
                "image_size": cfg.model.image_size, "published": self.published() is not None}

    # -- publishing ------------------------------------------------------------------------------
    def staging_dir(self) -> Path:
        """A fresh folder inside the publish root for a training run to write into."""
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def publish(self, staged: Path) -> Path:
        """Move the complete model folder ``staged`` into place and make it current (atomically)."""
        if not model_complete(staged):
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
