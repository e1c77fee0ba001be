"""Fixtures for the server tests: one real ``monai-anon serve`` on 127.0.0.1 for the session, serving the
suite's tiny model (``tiny_model`` from ``tests/conftest.py``) over a phantom study."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from server_testlib import Server, make_study, start_server


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


@pytest.fixture(scope="session")
def client(server, tmp_path_factory):
    from monailabel.client import MONAILabelClient

    return MONAILabelClient(server.url, tmpdir=str(tmp_path_factory.mktemp("client")))


@pytest.fixture
def reference(server, tiny_model):
    """``reference()`` → the in-process :class:`Anonymizer` of the model the server serves right now."""
    from monai_anon_app.inference import Anonymizer
    from monai_anon_app.server.model_store import ModelStore

    store = ModelStore(tiny_model, server.workdir / "app" / "model" / tiny_model.name)
    cache: dict[str, Anonymizer] = {}

    def current() -> Anonymizer:
        folder = store.current_dir()
        key = str(folder)
        if key not in cache:
            cache[key] = Anonymizer.load(folder)
        return cache[key]

    return current


@pytest.fixture
def image_ids(server) -> list[str]:
    return sorted(server.get("/datastore/?output=all").json()["objects"])
