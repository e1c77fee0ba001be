"""Phantom DX files: valid IOD, deterministic, one realistic fake timeline per patient."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pydicom

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.pixel_change import KEPT
from monai_anon_app.dicom.process import process_dicom


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def test_phantom_cohort_as_dicom(tmp_path, dciodvfy):
    cohort = Cohort(2, 3, seed=11)
    labels = write_cohort(tmp_path / "a", cohort, size=48, fmt="dicom", progress=False)
    write_cohort(tmp_path / "b", cohort, size=48, fmt="dicom", progress=False)
    rows = list(csv.DictReader(labels.open()))
    assert len(rows) == 6
    by_patient: dict[str, list] = {}
    for row in rows:
        path = tmp_path / "a" / row["file"]
        assert path.read_bytes() == (tmp_path / "b" / row["file"]).read_bytes()  # deterministic
        assert dciodvfy(path) == set()
        ds = _read(path)
        assert ds.PatientID == row["patient_id"] and ds.Modality == "DX"
        assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (16, 12, "MONOCHROME2")
        assert [float(v) for v in ds.PixelSpacing] == [430 / 48, 430 / 48] or np.allclose(
            [float(v) for v in ds.PixelSpacing], 430 / 48, rtol=1e-5)
        case = cohort.case(int(row["patient_id"][-5:]), int(row["visit"]))
        np.testing.assert_array_equal(ds.pixel_array, np.rint(case.image(48) * 4095).astype(np.uint16))
        assert ds.private_block(0x0009, "MONAI-ANON PHANTOM")[0x01].value  # a private LO with the name
        for keyword in ("PatientName", "PatientBirthDate", "InstitutionName", "AccessionNumber", "OperatorsName",
                        "StationName", "DeviceSerialNumber", "ReferringPhysicianName"):
            assert str(ds.get(keyword, "")).strip(), keyword
        by_patient.setdefault(ds.PatientID, []).append(ds)
    for studies in by_patient.values():
        studies.sort(key=lambda d: int(d.StudyID[1:]))
        for keyword in ("PatientName", "PatientBirthDate", "InstitutionName", "DeviceSerialNumber", "PatientSex"):
            assert len({str(d.get(keyword)) for d in studies}) == 1, keyword
        assert [d.StudyDate for d in studies] == sorted({d.StudyDate for d in studies})  # one timeline
        assert len({d.StudyInstanceUID for d in studies}) == 3  # one study per visit
        assert all(d.StudyDate > d.PatientBirthDate for d in studies)


def test_phantom_headers_are_all_removed(tmp_path):
    cohort = Cohort(1, 1, seed=12)
    write_cohort(tmp_path / "in", cohort, size=32, fmt="dicom", progress=False)
    src = next((tmp_path / "in").rglob("*.dcm"))
    ds = _read(src)
    secrets = [str(ds.PatientName).split("^")[0], ds.PatientID, ds.InstitutionName, ds.StudyDate,
               ds.PatientBirthDate, ds.AccessionNumber, ds.DeviceSerialNumber, ds.StationName, ds.StudyInstanceUID,
               ds.file_meta.SourceApplicationEntityTitle]
    process_dicom(src, tmp_path / "out.dcm", DeidOptions(key="k" * 12), None, KEPT)
    data = (tmp_path / "out.dcm").read_bytes()
    assert not [s for s in secrets if s.encode() in data]
