"""Fixtures shared by the whole suite: a tiny model trained once per session with the real trainer."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "monai_anon_app" / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A model folder trained end to end (disentangler, bank, identity VAE) from ``tiny.yaml``."""
    from monai_anon_app.modelfolder.config import load_config
    from monai_anon_app.training.fit import train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    train_model(load_config(TINY_CONFIG), out, progress=False)
    return out
