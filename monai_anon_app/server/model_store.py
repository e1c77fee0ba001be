"""Which model folder the infer tasks serve: the newest folder training published (see
:mod:`monai_anon_app.modelfolder.publish`), else the *base* folder (``--model``; may be absent).

Every process (server, inference workers, training subprocesses) resolves the folder on each use, so new
weights are picked up at the next request; loaded models are cached per folder and file times.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from monai_anon_app.errors import ModelError
from monai_anon_app.inference import Anonymizer
from monai_anon_app.modelfolder.config import TrainConfig, load_config
from monai_anon_app.modelfolder.folder import MODEL_FILES, checksum, is_complete
from monai_anon_app.modelfolder.publish import PublishRoot

__all__ = ["ModelStore"]



class ModelStore(PublishRoot):
    """The served model folder: newest published training result, else the base folder."""

    def __init__(self, base: str | os.PathLike | None, publish_root: str | os.PathLike) -> None:
        super().__init__(publish_root)
        self.base = Path(base) if base else None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, Any]] = {}

    # -- where ------------------------------------------------------------------------------------
    def current_dir(self) -> Path | None:
        """The folder to serve now, or None when there is no complete model."""
        published = self.published()
        if published is not None:
            return published
        return self.base if is_complete(self.base) else None

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
        folder = self.current_dir()
        if folder is None:
            where = f"{self.base}" if self.base else "no model folder was configured"
            raise ModelError(f"no trained model is available ({where}); train one with POST /train/disentangler "
                             "or `monai-anon train` and start the server with --model")
        return folder

    def config(self) -> TrainConfig | None:
        """The served model's :class:`~monai_anon_app.modelfolder.config.TrainConfig` (None without a model)."""
        folder = self.current_dir()
        return None if folder is None else self._cached("config", folder, lambda f: load_config(f / "config.yaml"))

    def checksum(self) -> str | None:
        folder = self.current_dir()
        return None if folder is None else self._cached("checksum", folder, checksum)

    def anonymizer(self) -> Anonymizer:
        """The loaded :class:`~monai_anon_app.inference.Anonymizer` for the current folder (cached)."""
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
