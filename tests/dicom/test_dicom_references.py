"""Referential integrity across a multi-file study, and determinism across batches with one key."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pydicom
from dicom_testlib import KEY
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from monai_anon_app.dicom.keys import KeyRing

ROOT = "1.2.826.0.1.3680043.9.8888."
STUDY, SERIES, SR_SERIES, FOR = ROOT + "1", ROOT + "2", ROOT + "3", ROOT + "4"
CT = [ROOT + f"10{i}" for i in range(3)]
SR_UID = ROOT + "200"
SNOMED_UID = "2.16.840.1.113883.6.96"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def _ref(uid: str, cls: str = CTImageStorage) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, uid
    return item


def _common(ds: Dataset, sop_class: str, sop: str, series: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "20200102", "0900", "ACC1", "Doc^A"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Ref^Patient", "REFPAT01", "19700101", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyID, ds.SeriesNumber = STUDY, series, "1", 1
    ds.Manufacturer = "Co"


def _series_refs(uids: list[str]) -> list[Dataset]:
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    series.ReferencedInstanceSequence = [_ref(u) for u in uids]
    return [series]


def _ct(i: int) -> Dataset:
    ds = Dataset()
    _common(ds, CTImageStorage, CT[i], SERIES)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality, ds.InstanceNumber, ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = "CT", i + 1, FOR, ""
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, i], [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 4, 4
    ds.PixelSpacing, ds.SliceThickness, ds.KVP = [1, 1], 1, "120"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = bytes(32)
    ds["PixelData"].VR = "OW"
    if i:  # image i references image i-1, with the Common Instance Reference module listing it
        ds.ReferencedImageSequence = [_ref(CT[i - 1])]
        ds.SourceImageSequence = [_ref(CT[i - 1])]
        ds.ReferencedSeriesSequence = _series_refs([CT[i - 1]])
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _sr() -> Dataset:
    ds = Dataset()
    _common(ds, COMPREHENSIVE_SR, SR_UID, SR_SERIES)
    ds.Modality, ds.InstanceNumber, ds.ContentDate, ds.ContentTime = "SR", 1, "20200102", "0901"
    ds.ValueType, ds.ContinuityOfContent, ds.CompletionFlag, ds.VerificationFlag = \
        "CONTAINER", "SEPARATE", "COMPLETE", "UNVERIFIED"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    scheme = Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeUID = "SCT", SNOMED_UID
    ds.CodingSchemeIdentificationSequence = [scheme]
    evidence = Dataset()
    evidence.StudyInstanceUID = STUDY
    series = Dataset()
    series.SeriesInstanceUID = SERIES
    series.ReferencedSOPSequence = [_ref(u) for u in CT]
    evidence.ReferencedSeriesSequence = [series]
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    image = Dataset()
    image.RelationshipType, image.ValueType = "CONTAINS", "IMAGE"
    image.ConceptNameCodeSequence = [_code("121112", "DCM", "Source of Measurement")]
    image.ReferencedSOPSequence = [_ref(CT[2])]
    section = Dataset()
    section.RelationshipType, section.ValueType, section.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    section.ConceptNameCodeSequence = [_code("121070", "DCM", "Findings")]
    section.ContentSequence = [image]
    ds.ContentSequence = [section]
    ds.PerformedProcedureCodeSequence = []
    ds.ReferencedPerformedProcedureStepSequence = []
    return ds


def _save(ds: Dataset, path: Path, syntax=ExplicitVRLittleEndian) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    out = FileDataset(str(path), ds, file_meta=meta, preamble=b"\0" * 128)
    out.is_little_endian, out.is_implicit_VR = True, syntax == ImplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save_as(str(path), write_like_original=False)


def _study(root: Path) -> list[Path]:
    paths = []
    for i in range(3):  # mixed encodings on purpose
        paths.append(root / "CT" / f"ct{i}.dcm")
        _save(_ct(i), paths[-1], ImplicitVRLittleEndian if i == 1 else ExplicitVRLittleEndian)
    paths.append(root / "SR" / "report.dcm")
    _save(_sr(), paths[-1])
    return paths


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path))


def test_references_stay_intact_across_a_study(tmp_path, cli, dciodvfy):
    inputs = _study(tmp_path / "in")
    mapping = tmp_path / "mapping.csv"
    code, out, _ = cli("deid", str(tmp_path / "in"), str(tmp_path / "out"), "--key", KEY, "--no-progress",
                       "--mapping-file", str(mapping))
    assert code == 0 and "4 done, 0 skipped, 0 failed" in out
    written = {Path(r["source"]).name: Path(r["output"]) for r in csv.DictReader(mapping.open())}  # named by UIDs
    outs = {p.name: _read(written[p.name]) for p in inputs}
    cts = [outs[f"ct{i}.dcm"] for i in range(3)]
    sr = outs["report.dcm"]
    ring = KeyRing(KEY.encode())
    assert len({d.StudyInstanceUID for d in outs.values()}) == 1
    assert {d.SeriesInstanceUID for d in cts} == {ring.uid(SERIES)} and sr.SeriesInstanceUID == ring.uid(SR_SERIES)
    assert {d.FrameOfReferenceUID for d in cts} == {ring.uid(FOR)}
    new_sops = {d.SOPInstanceUID for d in outs.values()}
    assert new_sops == {ring.uid(u) for u in [*CT, SR_UID]} and not new_sops & {*CT, SR_UID}
    references = [(d.SOPInstanceUID, e.value) for d in outs.values() for e in d.iterall()
                  if e.keyword == "ReferencedSOPInstanceUID"]
    assert len(references) >= 2 * 3 + 3 + 1  # images, the SR evidence and the SR content tree
    assert all(target in new_sops for _, target in references)
    assert cts[2].ReferencedImageSequence[0].ReferencedSOPInstanceUID == cts[1].SOPInstanceUID
    assert cts[2].SourceImageSequence[0].ReferencedSOPInstanceUID == cts[1].SOPInstanceUID
    image_item = sr.ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0]
    assert image_item.ReferencedSOPInstanceUID == cts[2].SOPInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sr.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == cts[0].SeriesInstanceUID
    for d in outs.values():  # what names things, not instances, is untouched
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SOPClassUID in (CTImageStorage, COMPREHENSIVE_SR)
        assert all(e.value == CTImageStorage for e in d.iterall() if e.keyword == "ReferencedSOPClassUID")
    assert sr.CodingSchemeIdentificationSequence[0].CodingSchemeUID == SNOMED_UID
    assert outs["ct1.dcm"].file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    originals = [*CT, SR_UID, STUDY, SERIES, SR_SERIES, FOR]
    for p in (tmp_path / "out").rglob("*.dcm"):
        data = p.read_bytes()
        assert not [u for u in originals if u.encode() in data]
    for p in inputs:
        new = dciodvfy(written[p.name]) - dciodvfy(p)
        assert not new, (p.name, new)


def test_same_key_same_bytes_across_batches(tmp_path, cli):
    _study(tmp_path / "in")
    for run in ("a", "b"):
        assert cli("deid", str(tmp_path / "in"), str(tmp_path / run), "--key", KEY, "--no-progress")[0] == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    assert len(files) == 4
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert cli("deid", str(tmp_path / "in"), str(tmp_path / "c"), "--key", "another-key-456", "--no-progress")[0] == 0
    a, c = (_read(next((tmp_path / run).rglob(f"{KeyRing(key.encode()).uid(CT[0])}.dcm")))
            for run, key in (("a", KEY), ("c", "another-key-456")))
    assert a.StudyInstanceUID != c.StudyInstanceUID and a.PatientID != c.PatientID
