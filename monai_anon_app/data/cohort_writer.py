"""Write a phantom cohort to disk as PNG, NIfTI or DICOM plus ``labels.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.phantom_headers import write_phantom_dicom
from monai_anon_app.imageio.formats import FORMAT_SUFFIXES
from monai_anon_app.imageio.images import Image2D, atomic_write, new_nifti, write_image

__all__ = ["FORMATS", "LABEL_COLUMNS", "write_cohort"]

FORMATS = ("png", "nifti", "dicom")
LABEL_COLUMNS = ("file", "patient_id", "finding", "visit", "side", "image_size")
FIELD_OF_VIEW_MM = 430.0  # a 43 cm detector, as for a chest radiograph


def write_cohort(out: str | Path, cohort: Cohort, size: int, fmt: str = "png", progress: bool = True) -> Path:
    """Render every image of ``cohort`` at ``size`` px into ``out``; return the path of ``labels.csv``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    spacing = (FIELD_OF_VIEW_MM / size, FIELD_OF_VIEW_MM / size)
    suffix = FORMAT_SUFFIXES[fmt][0]  # how the package names a new file of the format
    rows = []
    for case in tqdm(cohort, total=len(cohort), desc="phantoms", unit="img", disable=not progress):
        rel = f"images/{case.patient_id}_v{case.visit:02d}{suffix}"
        image = case.image(size)
        if fmt == "png":
            write_image(out / rel, np.rint(image * 65535), Image2D(image, "png", {"dtype": "uint16"}))
        elif fmt == "nifti":
            write_image(out / rel, image, new_nifti(image, spacing))
        else:
            write_phantom_dicom(out / rel, image, case, cohort, spacing)
        rows.append({"file": rel, "patient_id": case.patient_id, "finding": case.finding.kind, "visit": case.visit,
                     "side": case.finding.side, "image_size": size})
    labels = out / "labels.csv"

    def _write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(labels, _write)
    return labels
