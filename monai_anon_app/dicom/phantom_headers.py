"""Phantom radiographs as DICOM DX files with realistic *fake* patient headers.

Every identifying value (names, IDs, dates, institution, device, a private block) is invented,
deterministic in the cohort seed, patient index and visit, and consistent across a patient's visits
(one timeline per patient, one study per visit), so de-identification has real work to do.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_anon_app import __version__
from monai_anon_app.imageio.images import atomic_write

__all__ = ["DX_FOR_PRESENTATION", "phantom_dataset", "write_phantom_dicom"]

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
BITS_STORED = 12
_FIRST = ("Anna", "Ben", "Clara", "David", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Katrin",
          "Lukas", "Maria", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tessa", "Ugo", "Vera")
_LAST = ("Albrecht", "Barros", "Castellano", "Dubois", "Eriksen", "Fontaine", "Gallagher", "Hoffmann",
         "Ivanova", "Janssen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Oliveira", "Petrov", "Quast",
         "Rinaldi", "Schneider", "Tanaka", "Urbanski", "Vasquez")
_SITES = (("St. Aurelia General Hospital", "12 Harbour Road, Westport"),
          ("Mercy Lake Clinic", "400 Lakeside Avenue, Northfield"),
          ("Hillcrest University Medical Centre", "1 Campus Drive, Hillcrest"))
_STAFF = ("Weber^Klaus", "Okafor^Ngozi", "Lindgren^Sara", "Marchetti^Paolo", "Haddad^Yasmin")


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(("monai-anon dicom phantom", *key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _uid(*key: object) -> str:
    return generate_uid(entropy_srcs=["monai-anon phantom", *map(str, key)])


def phantom_dataset(image: np.ndarray, case, cohort, spacing: tuple[float, float]) -> Dataset:
    """The DX data set (with file meta) for one phantom image in ``[0, 1]``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"phantom image must be 2D, got shape {image.shape}")
    seed, index, visit = int(cohort.seed), int(case.patient_index), int(case.visit)
    pr = _rng(seed, index)  # patient-level draws, identical for every visit
    first, last = _FIRST[pr.integers(len(_FIRST))], _LAST[pr.integers(len(_LAST))]
    sex = "F" if pr.random() < 0.5 else "M"
    birth = _dt.date(1940, 1, 1) + _dt.timedelta(days=int(pr.integers(0, 60 * 365)))
    site, address = _SITES[pr.integers(len(_SITES))]
    referring = _STAFF[pr.integers(len(_STAFF))]
    start = _dt.date(2014, 1, 1) + _dt.timedelta(days=int(pr.integers(0, 8 * 365)))
    station = f"DXROOM{int(pr.integers(1, 5))}"
    operator = int(pr.integers(len(_STAFF)))
    size, weight = f"{1.55 + 0.35 * pr.random():.2f}", f"{50 + 50 * pr.random():.0f}"
    serial = f"SN{int(pr.integers(10000, 99999))}"
    # visit k happens 30-400 days after visit k-1: one timeline per patient, whichever visit is asked for
    gaps = sum(int(_rng(seed, index, "gap", k).integers(30, 400)) for k in range(visit))
    study_day = start + _dt.timedelta(days=gaps)
    vr = _rng(seed, index, visit)
    study_time = _dt.time(int(vr.integers(7, 19)), int(vr.integers(0, 60)), int(vr.integers(0, 60)))
    acq = _dt.datetime.combine(study_day, study_time) + _dt.timedelta(minutes=int(vr.integers(2, 20)))
    age = study_day.year - birth.year - ((study_day.month, study_day.day) < (birth.month, birth.day))
    da, tm = study_day.strftime("%Y%m%d"), study_time.strftime("%H%M%S")

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = da, acq.strftime("%H%M%S")
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = _uid(seed, index, visit, "instance")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = da
    ds.AcquisitionDateTime = acq.strftime("%Y%m%d%H%M%S")
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = tm, tm, acq.strftime("%H%M%S")
    ds.AccessionNumber = f"A{seed % 100:02d}{index:05d}{visit:02d}{int(vr.integers(100, 999))}"
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "Phantom Imaging Systems"
    ds.InstitutionName, ds.InstitutionAddress = site, address
    ds.ReferringPhysicianName = referring
    ds.StationName = station
    ds.StudyDescription = f"CHEST PA {last.upper()}"
    ds.SeriesDescription = "PA"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.OperatorsName = _STAFF[(operator + visit) % len(_STAFF)]
    ds.ManufacturerModelName = "PhantomDX 1"
    anatomy = Dataset()
    anatomy.CodeValue, anatomy.CodingSchemeDesignator, anatomy.CodeMeaning = "51185008", "SCT", "Thorax"
    ds.AnatomicRegionSequence = Sequence([anatomy])
    ds.PatientName = f"{last}^{first}"
    ds.PatientID = case.patient_id
    ds.IssuerOfPatientID = site
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = sex
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientSize, ds.PatientWeight = size, weight
    ds.BodyPartExamined = "CHEST"
    ds.DeviceSerialNumber = serial
    ds.SoftwareVersions = f"monai-anon phantom {__version__}"
    ds.ImagerPixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    ds.PixelSpacing = [f"{spacing[0]:.6g}", f"{spacing[1]:.6g}"]
    ds.DetectorType = "DIRECT"
    ds.ViewPosition = "PA"
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "399348003", "SCT", "postero-anterior"
    ds.ViewCodeSequence = Sequence([view])
    ds.PositionerType = "NONE"
    ds.ImageLaterality = "U"
    ds.StudyInstanceUID = _uid(seed, index, visit, "study")
    ds.SeriesInstanceUID = _uid(seed, index, visit, "series")
    ds.StudyID = f"S{visit + 1:03d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.ImageComments = f"Follow-up {visit + 1} for {first} {last}, ID {case.patient_id}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = Sequence()
    block = ds.private_block(0x0009, "MONAI-ANON PHANTOM", create=True)
    block.add_new(0x01, "LO", f"{first} {last}")
    block.add_new(0x02, "LO", case.patient_id)
    stored = np.clip(np.rint(image * ((1 << BITS_STORED) - 1)), 0, (1 << BITS_STORED) - 1).astype("<u2")
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = ds.StationName
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    return ds


def write_phantom_dicom(path: str | os.PathLike, image: np.ndarray, case, cohort,
                        spacing: tuple[float, float]) -> None:
    """Write one phantom as a DX file at ``path`` (atomically)."""

    ds = phantom_dataset(image, case, cohort, spacing)
    out = FileDataset(str(path), ds, file_meta=ds.file_meta, preamble=b"\0" * 128)
    out.is_little_endian, out.is_implicit_VR = True, False
    atomic_write(path, lambda tmp: out.save_as(tmp, write_like_original=False))
