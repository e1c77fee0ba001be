"""The bundled sample study: a few phantom patients as DICOM DX with realistic fake headers.

Regenerate it with ``python -m monai_anon_app.data.sample`` (deterministic). It is package data
(``pyproject.toml``, ``[tool.setuptools.package-data]``): an installed wheel carries it inside the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort

__all__ = ["SAMPLE_STUDY", "sample_study"]

SAMPLE_STUDY = Path(__file__).resolve().parent / "sample_study"
SAMPLE_COHORT = {"patients": 4, "images_per_patient": 3, "seed": 9001, "size": 256}


def sample_study() -> Path:
    """Path of the bundled sample study (``labels.csv`` + ``images/*.dcm``)."""
    if not (SAMPLE_STUDY / "labels.csv").is_file() or not any((SAMPLE_STUDY / "images").glob("*.dcm")):
        raise FileNotFoundError(f"the bundled sample study (labels.csv and images/*.dcm) is missing from "
                                f"{SAMPLE_STUDY}; reinstall monai-anon")
    return SAMPLE_STUDY


def main() -> None:

    shutil.rmtree(SAMPLE_STUDY, ignore_errors=True)
    c = SAMPLE_COHORT
    write_cohort(SAMPLE_STUDY, Cohort(c["patients"], c["images_per_patient"], c["seed"]), c["size"], "dicom")


if __name__ == "__main__":
    main()
