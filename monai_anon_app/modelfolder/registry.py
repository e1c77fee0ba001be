"""Where models live: ``models/<name>/`` in the repository (the MONAI Label app's model folder)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "resolve_model"]

MODELS_DIR = Path(os.environ.get("MONAI_ANON_MODELS", Path(__file__).resolve().parents[2] / "models"))
DEFAULT_MODEL = "phantom-cxr"


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A model folder from a path, or a name under :data:`MODELS_DIR` (the shipped default when None)."""
    if model is None:
        return MODELS_DIR / DEFAULT_MODEL
    p = Path(model)
    if p.is_dir() or p.is_absolute() or len(p.parts) > 1:
        return p
    return MODELS_DIR / str(model)
