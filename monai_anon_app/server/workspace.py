"""The per-user working folder of ``monai-anon serve``: everything the server writes goes here, never
into the installed package.

::

    <workdir>/app/main.py        a one-line MONAI Label app file importing monai_anon_app.main
    <workdir>/app/model/<name>/  weights published by training over REST (MONAI Label's app model folder)
    <workdir>/app/logs/          MONAI Label's logs
    <workdir>/app/deid.key       secret key for DICOM exports (UIDs, dates), made on first use
    <workdir>/sample-study/      copy of the bundled sample study (when --studies is not given)
    <workdir>/sessions/          MONAI Label sessions (uploaded images, removed when they expire)
    <workdir>/dicomweb-cache/    series downloaded from a DICOMweb datastore
    <workdir>/tmp/               per-request temporary files (removed after each request)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.data.sample import SAMPLE_COHORT, SAMPLE_STUDY

__all__ = ["SAMPLE_STUDY", "default_workdir", "prepare_app_dir", "prepare_sample_study"]

APP_FILE = '''"""MONAI Label app file written by `monai-anon serve`: the app lives in the monai_anon_app package."""

from monai_anon_app.main import AnonymizationApp  # noqa: F401
'''


def default_workdir() -> Path:
    """``$MONAI_ANON_HOME``, else ``$XDG_DATA_HOME/monai-anon/serve`` (``~/.local/share/…``)."""
    if os.environ.get("MONAI_ANON_HOME"):
        return Path(os.environ["MONAI_ANON_HOME"]).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "monai-anon" / "serve"


def prepare_app_dir(workdir: Path) -> Path:
    """The MONAI Label ``--app`` folder inside ``workdir`` (its ``main.py`` imports the package's app)."""
    app_dir = workdir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    main = app_dir / "main.py"
    if not main.is_file() or main.read_text() != APP_FILE:
        main.write_text(APP_FILE)
    return app_dir


def prepare_sample_study(workdir: Path) -> Path:
    """A writable copy of the bundled sample study (phantom DX images + ``labels.csv``) in ``workdir``.

    Copied once (MONAI Label then keeps its datastore file there); should the package lack its sample
    study, the same deterministic cohort is generated instead.
    """
    target = workdir / "sample-study"
    if (target / "labels.csv").is_file():
        return target
    tmp = workdir / ".sample-study-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    if (SAMPLE_STUDY / "labels.csv").is_file():
        shutil.copytree(SAMPLE_STUDY, tmp, ignore=shutil.ignore_patterns("datastore_v2.json", ".lock", "labels",
                                                                          "__pycache__"))
    else:
        c = SAMPLE_COHORT
        write_cohort(tmp, Cohort(c["patients"], c["images_per_patient"], c["seed"]), c["size"], "dicom",
                     progress=False)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
