"""Where models live, and which folder a model name means.

A model is a folder (``config.yaml``, ``model.pt``, …). :func:`resolve_model` takes a path to one, or a
name looked up in the models folder :data:`MODELS_DIR`, or None for the shipped default model
(:data:`DEFAULT_MODEL`, ``phantom-cxr``). :data:`MODELS_DIR` is, in this order:

1. ``$MONAI_ANON_MODELS`` when it is set (and not empty): your own models folder (only it is searched);
2. ``<installed package>/models/`` — the models shipped inside the package: an installed wheel
   (``pip install .``) carries the repository's top-level ``models/phantom-cxr`` there (``pyproject.toml``,
   ``[tool.setuptools.package-dir]``);
3. ``<repository>/models/`` — the source tree's ``models/`` (an editable install, ``pip install -e .``,
   or running from a checkout), recognised by the ``pyproject.toml`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_MODEL", "MODELS_DIR", "MODELS_VARIABLE", "PACKAGE_MODELS", "SOURCE_MODELS", "models_dir",
           "resolve_model"]

MODELS_VARIABLE = "MONAI_ANON_MODELS"
DEFAULT_MODEL = "phantom-cxr"
#: the models folder inside the installed package (present in a wheel install)
PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "models"
#: the repository's top-level models folder (used when running from the source tree)
SOURCE_MODELS = Path(__file__).resolve().parents[2] / "models"


def models_dir() -> Path:
    """The models folder, by the order in this module's docstring."""
    if os.environ.get(MODELS_VARIABLE):
        return Path(os.environ[MODELS_VARIABLE]).expanduser()
    if PACKAGE_MODELS.is_dir():
        return PACKAGE_MODELS
    if (SOURCE_MODELS.parent / "pyproject.toml").is_file() and SOURCE_MODELS.is_dir():
        return SOURCE_MODELS
    return PACKAGE_MODELS  # missing: errors then name the place a wheel install keeps its models


#: the models folder of this process (read once, at import)
MODELS_DIR = models_dir()


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A model folder from a path, or a name under :data:`MODELS_DIR` (the shipped default when None)."""
    if model is None:
        return MODELS_DIR / DEFAULT_MODEL
    p = Path(model)
    if p.is_dir() or p.is_absolute() or len(p.parts) > 1:
        return p
    return MODELS_DIR / str(model)
