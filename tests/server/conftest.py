"""Fixtures for the server tests, around the session's real server (``server`` in ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


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
