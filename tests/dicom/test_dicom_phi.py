"""PHI planted in 40+ places (top level, nested, free text, private, overlay, curve, icon, file meta,
preamble, dates with a known gap, UIDs) must not survive de-identification, under every option."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pydicom
import pytest
from dicom_testlib import KEY, PHI_DATES, PHI_TOKENS, PRIVATE_CREATOR

from monai_anon_app.dicom.keys import KeyRing
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.pixel_change import KEPT
from monai_anon_app.dicom.process import process_dicom


def _deid(paths: list[Path], out: Path, **opts) -> list[Path]:
    options = DeidOptions(key=KEY, **opts)
    outs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            dst = out / p.name
            process_dicom(p, dst, options, None, KEPT)
            outs.append(dst)
    return outs


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def _leaks(path: Path, needles) -> list[str]:
    data = path.read_bytes().lower()
    return [n for n in needles if n.lower().encode() in data]


def test_fixture_really_plants_phi(phi_files):
    paths, uids = phi_files
    joined = b"".join(p.read_bytes().lower() for p in paths)
    missing = [t for t in (*PHI_TOKENS, *PHI_DATES, *uids) if t.lower().encode() not in joined]
    assert not missing
    assert len(PHI_TOKENS) + len(PHI_DATES) >= 20


@pytest.mark.parametrize("option", [None, "retain_modified_dates", "clean_descriptors", "retain_safe_private"])
def test_no_planted_token_date_or_uid_in_output_bytes(phi_files, tmp_path, option):
    paths, uids = phi_files
    outs = _deid(paths, tmp_path / "out", **({option: True} if option else {}))
    for out in outs:
        assert _leaks(out, (*PHI_TOKENS, *PHI_DATES, *uids)) == []
        assert out.read_bytes()[:128] == b"\0" * 128  # preamble cleared


def test_structure_after_basic_profile(phi_files, tmp_path):
    paths, _ = phi_files
    ds = _read(_deid(paths[:1], tmp_path / "out")[0])
    assert not [e.tag for e in ds.iterall() if e.tag.is_private]
    assert not [e.tag for e in ds if 0x5000 <= e.tag.group <= 0x60FF]  # curves and overlays
    assert "IconImageSequence" not in ds
    assert "OtherPatientIDsSequence" not in ds and "RequestAttributesSequence" not in ds
    assert ds.PatientID == ds.PatientName == KeyRing(KEY.encode()).pseudonym("PID7731XQ")
    meta = ds.file_meta
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle", "PrivateInformationCreatorUID", "PrivateInformation"):
        assert keyword not in meta
    # markers
    assert ds.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert "BurnedInAnnotation" not in ds and "RecognizableVisualFeatures" not in ds  # pixels untouched
    assert ds.ContributingEquipmentSequence[-1].Manufacturer == "monai-anon"
    assert ds.ContributingEquipmentSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "109104"
    # IOD types: Type 2 attributes of the CT IOD are emptied, Type 3 removed
    assert ds.StudyDate == "" and ds.AccessionNumber == "" and ds.PatientBirthDate == ""
    assert "SeriesDate" not in ds and "InstitutionName" not in ds and "AcquisitionDate" not in ds
    assert ds.ContentSequence[0].TextValue == "ANONYMIZED"  # free text in content items is replaced


EXPECTED_CODES = {
    "retain_modified_dates": ("113107", "MODIFIED"),
    "retain_full_dates": ("113106", "UNMODIFIED"),
    "retain_patient_characteristics": ("113108", "REMOVED"),
    "retain_device_identity": ("113109", "REMOVED"),
    "retain_institution_identity": ("113112", "REMOVED"),
    "clean_descriptors": ("113105", "REMOVED"),
    "retain_uids": ("113110", "REMOVED"),
    "retain_safe_private": ("113111", "REMOVED"),
}


@pytest.mark.parametrize("option", sorted(EXPECTED_CODES))
def test_each_option_is_switchable_and_declared(phi_files, tmp_path, option):
    paths, _ = phi_files
    src = _read(paths[0])
    extra = {"safe_private": {(PRIVATE_CREATOR, 0x0011, 0x11), (PRIVATE_CREATOR, 0x0011, 0x13)}} \
        if option == "retain_safe_private" else {}
    ds = _read(_deid(paths[:1], tmp_path / "out", **{option: True}, **extra)[0])
    code, temporal = EXPECTED_CODES[option]
    assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", code]
    assert ds.LongitudinalTemporalInformationModified == temporal
    if option == "retain_full_dates":
        assert ds.StudyDate == src.StudyDate and ds.AcquisitionDateTime == src.AcquisitionDateTime
    elif option == "retain_patient_characteristics":
        assert (ds.PatientSex, ds.PatientAge, ds.PatientWeight) == (src.PatientSex, src.PatientAge, src.PatientWeight)
    elif option == "retain_device_identity":
        assert ds.DeviceSerialNumber == src.DeviceSerialNumber and ds.StationName == src.StationName
    elif option == "retain_institution_identity":
        assert ds.InstitutionName == src.InstitutionName and ds.InstitutionAddress == src.InstitutionAddress
    elif option == "clean_descriptors":
        assert ds.StudyDescription == "CT HEAD *" and ds.SeriesDescription == "Axial *"
        assert "Quixote" not in ds.ImageComments and "20190305" not in ds.ImageComments
        assert ds.ContentSequence[0].TextValue == "* * seen *"
    elif option == "retain_uids":
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SOPInstanceUID == src.SOPInstanceUID
    elif option == "retain_safe_private":
        block = ds.private_block(0x0011, PRIVATE_CREATOR)
        assert str(block[0x13].value) == "3.5"  # listed safe: kept
        with pytest.raises(KeyError):
            block[0x10]  # the private LO with a name: not listed, dropped
        inner = block[0x11].value[0]  # a private SQ listed safe: kept, and its content cleaned
        assert str(inner.PatientName).startswith("ANON-")
        assert inner.ReferencedSOPInstanceUID != src.private_block(0x0011, PRIVATE_CREATOR)[0x11].value[0][
            0x00081155].value
    elif option == "retain_modified_dates":
        assert ds.StudyTime == src.StudyTime  # whole-day offsets keep the time of day


def test_both_date_options_are_an_error():
    with pytest.raises(ValueError, match="exclude each other"):
        DeidOptions(retain_modified_dates=True, retain_full_dates=True)


def _day(text: str) -> dt.date:
    return dt.datetime.strptime(text[:8], "%Y%m%d").date()


def test_modified_dates_keep_intervals_and_are_idempotent(phi_files, tmp_path):
    paths, uids = phi_files
    first = _deid(paths, tmp_path / "once", retain_modified_dates=True)
    a, b = (_read(p) for p in first)
    assert (_day(b.StudyDate) - _day(a.StudyDate)).days == 37  # the known gap between the visits
    offset = (_day(a.StudyDate) - dt.date(2019, 3, 4)).days
    assert -3653 <= offset <= -366
    assert (_day(b.ContentDate) - dt.date(2019, 4, 10)).days == offset  # one offset per patient
    assert a.PatientBirthDate == ""  # the table keeps no birth date, even with this option
    assert _day(a.AcquisitionDateTime) == _day(a.StudyDate) and a.AcquisitionDateTime[8:] == "101210"
    for out in first:
        assert _leaks(out, (*PHI_DATES, *uids)) == []
    # a second pass with the same key recognises its own output: nothing moves again
    second = _deid(first, tmp_path / "twice", retain_modified_dates=True)
    for p, q in zip(first, second):
        x, y = _read(p), _read(q)
        for keyword in ("StudyDate", "PatientBirthDate", "AcquisitionDateTime", "PatientID", "StudyInstanceUID",
                        "SOPInstanceUID", "FrameOfReferenceUID"):
            assert x.get(keyword) == y.get(keyword), keyword


def test_identity_key_and_pseudonym_do_not_expose_the_patient_id():
    ring = KeyRing(KEY.encode())
    pseudonym = ring.pseudonym("PID7731XQ")
    assert "PID7731XQ" not in pseudonym and ring.pseudonym(pseudonym) == pseudonym
    assert ring.identity_key("PID7731XQ") == ring.identity_key(pseudonym)
    assert KeyRing(b"another key!!").pseudonym("PID7731XQ") != pseudonym


def test_date_shifting_forms():
    from monai_anon_app.dicom.dates import shift_da, shift_dt, shift_values

    assert shift_da("20200301", -1) == "20200229" and shift_da("2020.03.01", -1) == "20200229"
    assert shift_da("20200101-20200201", 10) == "20200111-20200211" and shift_da("-20200201", 1) == "-20200202"
    assert shift_dt("20200301120000.5+0100", -1) == "20200229120000.5+0100"
    assert shift_dt("2020", -400) == "2019" and shift_dt("202003", -31) == "202002"
    assert shift_da("2020-03-01", 1) is None and shift_dt("garbage", 1) is None  # unparseable: caller removes
    assert shift_values("20200101\\20200102", "DA", 1) == "20200102\\20200103"
    assert shift_values("101112", "TM", -500) == "101112"  # whole days keep the time of day
