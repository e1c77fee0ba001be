"""Anonymized study export to a zip (the library the MONAI Label export task wraps)."""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from dicom_testlib import KEY

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.export import export_study_zip
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.phantom_headers import write_phantom_dicom
from monai_anon_app.dicom.pixel_change import KEPT, anonymized
from monai_anon_app.errors import InputError

CT = Path(pydicom.data.DATA_ROOT) / "test_files" / "CT_small.dcm"


def invert(pixels: np.ndarray, identity: str) -> np.ndarray:
    return (4095 - pixels).astype(np.float32)


def _inputs(tmp_path: Path) -> list[Path]:
    cohort = Cohort(1, 2, seed=21)
    paths = []
    for case in cohort:
        paths.append(tmp_path / "in" / f"v{case.visit}.dcm")
        write_phantom_dicom(paths[-1], case.image(32), case, cohort, (1.0, 1.0))
    notes = tmp_path / "in" / "notes.txt"
    notes.write_text("not DICOM")
    return [*paths, CT, notes]


def test_export_zip_with_refusals_and_failures(tmp_path):
    inputs = _inputs(tmp_path)
    summary = export_study_zip(inputs, tmp_path / "export" / "study.zip", DeidOptions(key=KEY), invert,
                               anonymized("full"))
    assert summary.done == 2 and len(summary.study_uids) == 2
    assert [name for name, _ in summary.refused] == ["CT_small.dcm"] and "CT" in summary.refused[0][1]
    assert [name for name, _ in summary.failed] == ["notes.txt"]
    json.dumps(summary.to_dict())
    with zipfile.ZipFile(tmp_path / "export" / "study.zip") as zf:
        assert sorted(zf.namelist()) == summary.files
        for name in zf.namelist():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(zf.open(name))
            study, series, sop = name[:-4].split("/")
            assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (study, series, sop)
            assert ds.BurnedInAnnotation == "NO" and ds.PatientID.startswith("ANON-")
            assert ds.RecognizableVisualFeatures == "NO"  # a full anonymization: the one clean claim
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["study.zip"]  # no temporary leftovers


def test_export_headers_only_takes_every_dicom_object(tmp_path):
    inputs = _inputs(tmp_path)
    summary = export_study_zip(inputs, tmp_path / "all.zip", DeidOptions(key=KEY), None, KEPT)
    assert summary.done == 3 and not summary.refused and len(summary.failed) == 1


def test_export_of_nothing_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"nothing to export.*CT_small\.dcm"):
        export_study_zip([CT], tmp_path / "none.zip", DeidOptions(key=KEY), invert, anonymized("full"))
    assert not (tmp_path / "none.zip").exists()


def test_residual_export_claims_no_clean_pixels_and_a_duplicate_is_skipped(tmp_path):
    inputs = _inputs(tmp_path)[:2]
    summary = export_study_zip([*inputs, inputs[0]], tmp_path / "r.zip", DeidOptions(key=KEY), invert,
                               anonymized("residual"))
    assert summary.done == 2 and [n for n, _ in summary.skipped] == [inputs[0].name]
    assert "same instance" in summary.skipped[0][1]
    with zipfile.ZipFile(tmp_path / "r.zip") as zf:
        for name in zf.namelist():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(zf.open(name))
            assert ds.RecognizableVisualFeatures == "YES"
            assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
            assert "residual" in ds.DerivationDescription and "identifying detail" in ds.DerivationDescription
