"""Real peers the tests need (Orthanc, dicom3tools, DCMTK, pydicom-data, PySide6, itk, the shared data).

Locally a missing peer skips the test that needs it; under CI (``CI=true``) it fails the test with what is
missing and how to install it, so a CI run can never pass with a group of real-peer tests skipped.
Import from any test module (``tests/`` is on ``sys.path``): ``from peers import require_module``.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

__all__ = ["DEBIAN", "ORTHANC_DICOMWEB", "SHARED_DATA", "in_ci", "require_module", "require_orthanc", "require_path",
           "require_peer", "require_program"]

REPO = Path(__file__).resolve().parents[1]
#: The shared data folder beside the clone (``../shared/data``; in CI a copy beside the clone).
SHARED_DATA = REPO.parent / "shared" / "data"
#: Debian ``orthanc-dicomweb``'s plugin file.
ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DEBIAN = "apt-get install orthanc orthanc-dicomweb dicom3tools dcmtk"


def in_ci() -> bool:
    """True under CI (``CI`` set to a true value, as GitHub Actions, GitLab CI and ``.ci/run`` do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_peer(available: bool, what: str, install: str) -> None:
    """Skip the calling test when ``what`` is not ``available``; under CI fail it instead."""
    if available:
        return
    message = f"{what} is missing (install: {install})"
    if in_ci():
        pytest.fail(f"CI=true and a real peer is missing: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, install: str) -> ModuleType:
    """``import name`` (like ``pytest.importorskip``, but a failure under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        require_peer(False, f"the Python module {name} ({exc})", install)
        raise  # not reached


def require_program(name: str, install: str) -> str:
    """The path of the program ``name`` on ``PATH``."""
    path = shutil.which(name)
    require_peer(path is not None, f"the program {name}", install)
    return str(path)


def require_path(path: Path, what: str, install: str) -> Path:
    """``path``, which must exist."""
    require_peer(Path(path).exists(), f"{what} ({path})", install)
    return Path(path)


def require_orthanc() -> str:
    """The Orthanc program, with its DICOMweb plugin installed (both Debian packages)."""
    orthanc = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
    require_peer(orthanc is not None, "the Orthanc PACS (Debian orthanc)", DEBIAN)
    require_path(ORTHANC_DICOMWEB, "Orthanc's DICOMweb plugin (Debian orthanc-dicomweb)", DEBIAN)
    return str(orthanc)
