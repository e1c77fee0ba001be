"""Fixtures for the DICOM tests; the helpers behind them live in ``dicom_testlib.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_testlib import KEY, build_phi_dataset, dciodvfy_errors, pydicom_data_files, pydicom_test_files, run_cli
from peers import DEBIAN, require_program


@pytest.fixture
def key() -> str:
    return KEY


@pytest.fixture
def cli():
    """``cli("deid", IN, OUT, ...)`` → (exit code, stdout, stderr)."""
    return run_cli


@pytest.fixture
def dciodvfy():
    """``dciodvfy(path)`` → set of normalised error lines (a skip without dicom3tools; a failure under CI)."""
    require_program("dciodvfy", DEBIAN)
    return dciodvfy_errors


@pytest.fixture(scope="session")
def corpus() -> dict[str, list[Path]]:
    """The offline corpora: pydicom's test files and the pydicom-data files."""
    return {"pydicom": pydicom_test_files(), "pydicom-data": pydicom_data_files()}


@pytest.fixture
def phi_files(tmp_path) -> tuple[list[Path], list[str]]:
    """Two PHI-planted files of one patient (visits 37 days apart) in ``tmp_path/in``; their UIDs."""
    paths, uids = [], []
    for visit in (0, 1):
        ds, planted = build_phi_dataset(visit)
        path = tmp_path / "in" / f"visit{visit}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(str(path), write_like_original=True)
        paths.append(path)
        uids += planted
    return paths, uids
