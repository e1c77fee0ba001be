"""The PHI-planted fixture shared by the DICOM and server tests: a CT image with PHI in 40+ places (top
level, nested, free text, private, overlay, curve, icon, file meta, preamble, dates with a known gap,
UIDs), and the same headers on a DX radiograph the model takes, for the pixel path and the export task."""

from __future__ import annotations

__all__ = ["PHI_DATES", "PHI_TOKENS", "PRIVATE_CREATOR", "build_phi_dataset", "build_phi_radiograph"]

PHI_TOKENS = (
    "Quixote", "Zebulon", "PID7731XQ", "OTHERID5521", "OTHERISSUERPHI", "Zebby", "Bouvier", "Wallaby",
    "5550199", "ACC99812", "STUDYID4411", "Hibbert", "Riviera", "Flanders", "Monroe", "Springfield",
    "Evergreen", "SPRINGCT01", "SERIAL884422", "BurnsDept", "REQPROC3321", "SPS5521", "NESTEDINSTITUTE",
    "Privatus", "PRIVLOPHI", "NESTEDPRIVPHI", "OVERLAYPHI", "CURVEPHI", "ICONPHI", "SRCAEPHI", "SENDAEPHI",
    "RECVAEPHI", "METAPRIVPHI", "PREAMBLEPHI", "EQUIPINSTITUTE", "EQUIPSTATION", "Martian", "MRNISSUERPHI",
)
PHI_DATES = ("20190304", "20190410", "19530717", "20190303", "20190305")
PRIVATE_CREATOR = "PHI PRIVATE CREATOR"
_ROOT = "1.2.826.0.1.3680043.9.7777."


def _code(value: str, scheme: str = "99PHI", meaning: str = "code"):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def build_phi_dataset(visit: int = 0):
    """A CT image with PHI planted in 40+ places; ``visit`` 1 is the same patient 37 days later."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    study_date = ("20190304", "20190410")[visit]
    uid = {k: f"{_ROOT}{visit + 1}{i:04d}" for i, k in enumerate(
        ("study", "series", "sop", "for", "ref", "src", "event", "pps", "meta"), start=11)}
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid["sop"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = study_date, "101500"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "101010", "101110", "101210", "101310"
    ds.AcquisitionDateTime = study_date + "101210"
    ds.AccessionNumber = "ACC99812"
    ds.Modality = "CT"
    ds.Manufacturer = "ScannerCo"
    ds.InstitutionName = "Springfield General"
    ds.InstitutionAddress = "742 Evergreen Terrace"
    ds.ReferringPhysicianName = "Hibbert^Julius"
    ds.StationName = "SPRINGCT01"
    ds.StudyDescription = "CT HEAD QUIXOTE"
    ds.SeriesDescription = "Axial Zebulon"
    ds.InstitutionalDepartmentName = "BurnsDept Radiology"
    ds.PhysiciansOfRecord = "Monroe^Marvin"
    ds.PerformingPhysicianName = "Riviera^Nick"
    ds.NameOfPhysiciansReadingStudy = "Hibbert^Julius"
    ds.OperatorsName = "Flanders^Ned"
    ref = Dataset()
    ref.PersonIdentificationCodeSequence = [_code("HIBBERT01")]
    ref.InstitutionName = "NESTEDINSTITUTE"
    ds.ReferringPhysicianIdentificationSequence = [ref]
    img = Dataset()
    img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = CTImageStorage, uid["ref"]
    ds.ReferencedImageSequence = [img]
    src = Dataset()
    src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = CTImageStorage, uid["src"]
    ds.SourceImageSequence = [src]
    pps = Dataset()
    pps.ReferencedSOPClassUID, pps.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.3", uid["pps"]
    ds.ReferencedPerformedProcedureStepSequence = [pps]
    ds.IrradiationEventUID = uid["event"]
    ds.PatientName = "Quixote^Zebulon"
    ds.PatientID = "PID7731XQ"
    ds.IssuerOfPatientID = "MRNISSUERPHI"
    ds.PatientBirthDate = "19530717"
    ds.PatientSex = "M"
    ds.PatientAge = "065Y"
    ds.PatientSize, ds.PatientWeight = "1.81", "77"
    ds.OtherPatientNames = "Quixote^Zebby"
    ds.PatientMotherBirthName = "Bouvier^Jacqueline"
    ds.PatientAddress = "42 Wallaby Way Sydney"
    ds.PatientTelephoneNumbers = "5550199"
    ds.EthnicGroup = "Martian"
    ds.AdditionalPatientHistory = "Lives at 42 Wallaby Way, seen 20190303"
    ds.PatientComments = "Call Zebulon at 5550199"
    other = Dataset()
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = "OTHERID5521", "OTHERISSUERPHI", "TEXT"
    ds.OtherPatientIDsSequence = [other]
    ds.DeviceSerialNumber = "SERIAL884422"
    ds.SoftwareVersions = "1.0"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid["study"], uid["series"]
    ds.StudyID = "STUDYID4411"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.FrameOfReferenceUID = uid["for"]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PositionReferenceIndicator = ""
    ds.ImageComments = "Seen by Dr Hibbert for Zebulon Quixote, MRN PID7731XQ, on 20190305"
    equipment = Dataset()
    equipment.Manufacturer, equipment.InstitutionName = "OtherCo", "EQUIPINSTITUTE"
    equipment.StationName = "EQUIPSTATION"
    equipment.ContributionDateTime = study_date + "090000"
    equipment.PurposeOfReferenceCodeSequence = [_code("109103", "DCM", "Modifying Equipment")]
    ds.ContributingEquipmentSequence = [equipment]
    request = Dataset()
    request.RequestedProcedureID = "REQPROC3321"
    request.ScheduledProcedureStepID = "SPS5521"
    request.RequestedProcedureDescription = "Head CT for Quixote"
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_ref.ReferencedSOPInstanceUID = uid["study"]
    request.ReferencedStudySequence = [study_ref]
    block = request.private_block(0x0013, "NESTED CREATOR", create=True)
    block.add_new(0x01, "LO", "NESTEDPRIVPHI")
    ds.RequestAttributesSequence = [request]
    ds.AnatomicRegionSequence = [_code("69536005", "SCT", "Head")]
    text = Dataset()
    text.RelationshipType, text.ValueType, text.TextValue = "CONTAINS", "TEXT", "Zebulon Quixote seen 20190305"
    text.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    ds.ContentSequence = [text]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.KVP = "120"
    ds.PixelData = bytes(range(128))
    ds["PixelData"].VR = "OW"
    # overlay, curve and icon
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60000022, "LO", "OVERLAYPHI description")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    ds.add_new(0x60004000, "LT", "OVERLAYPHI Quixote")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50002500, "LO", "CURVEPHI label")
    icon = Dataset()
    icon.SamplesPerPixel, icon.PhotometricInterpretation, icon.Rows, icon.Columns = 1, "MONOCHROME2", 2, 4
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = b"ICONPHI!"
    ds.IconImageSequence = [icon]
    # private attributes: an LO with a name, a private SQ holding a standard PN (and a safe number),
    # and a private copy of the Study Instance UID
    block = ds.private_block(0x0011, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", "PRIVLOPHI Zebulon")
    inner = Dataset()
    inner.PatientName = "Quixote^Privatus"
    inner.add_new(0x00081155, "UI", uid["ref"])
    block.add_new(0x11, "SQ", Sequence([inner]))
    block.add_new(0x12, "UI", uid["study"])  # a private copy of the Study Instance UID
    block.add_new(0x13, "DS", "3.5")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "SRCAEPHI"
    meta.SendingApplicationEntityTitle = "SENDAEPHI"
    meta.ReceivingApplicationEntityTitle = "RECVAEPHI"
    meta.PrivateInformationCreatorUID = uid["meta"]
    meta.PrivateInformation = b"METAPRIVPHI!"
    out = FileDataset("phi.dcm", ds, file_meta=meta, preamble=b"PREAMBLEPHI".ljust(128, b"\0"))
    out.is_little_endian, out.is_implicit_VR = True, False
    return out, sorted(set(uid.values()))


def build_phi_radiograph(visit: int = 0, size: int = 64):
    """:func:`build_phi_dataset` as a DX For Presentation radiograph of ``size``² 12-bit pixels (a smooth
    ramp): every planted identifier stays, and the model takes the image. Returns (data set, UIDs)."""
    import numpy as np
    from pydicom.uid import DigitalXRayImageStorageForPresentation

    ds, uids = build_phi_dataset(visit)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows = ds.Columns = size
    ds.ImagerPixelSpacing = ds.PixelSpacing = [1.0, 1.0]
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ramp = np.add.outer(np.arange(size), np.arange(size)) * (4095 / (2 * size - 2))
    ds.PixelData = np.rint(ramp).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds, uids
