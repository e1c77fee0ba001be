"""Fixtures shared by the whole suite: a tiny model trained once per session with the real trainer, and one
real ``monai-anon serve`` on 127.0.0.1 serving it over a phantom study (used by tests/server and tests/imageio)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "tests" / "server"))  # server_testlib: how the suite starts the real server

from server_testlib import Server, make_study, start_server  # noqa: E402

TINY_CONFIG = REPO / "monai_anon_app" / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A model folder trained end to end (disentangler, bank, identity VAE) from ``tiny.yaml``."""
    from monai_anon_app.modelfolder.config import load_config
    from monai_anon_app.training.fit import train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    train_model(load_config(TINY_CONFIG), out, progress=False)
    return out


@pytest.fixture(scope="session")
def study_template(tmp_path_factory) -> Path:
    """A phantom study (12 DICOM DX images of 4 patients, labels.csv) plus a NIfTI and a PNG image."""
    return make_study(tmp_path_factory.mktemp("study-template") / "study")


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model, study_template) -> Server:
    """The server under test (its own copy of the study: MONAI Label writes its datastore file there)."""
    root = tmp_path_factory.mktemp("server")
    studies = root / "studies"
    shutil.copytree(study_template, studies)
    srv = start_server(root / "work", studies, tiny_model, "--conf", "max_unzip_mb", "16")
    yield srv
    srv.stop()
