"""The ``C`` (clean) action for free text: keep the description, remove what identifies.

Used by Clean Descriptors, Retain Patient Characteristics and Retain Device Identity. A cleaned value
loses every identifying value found in the dataset itself (names, IDs, accession numbers, dates,
institution, station, serial numbers, addresses) and anything that looks like a date, a time, a long
number, an e-mail address or a phone number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["IDENTIFYING_KEYWORDS", "Scrubber"]

REDACTED = "*"
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "PatientBirthDate",
    "AccessionNumber", "StudyID", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
    "IssuerOfPatientID", "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "AdmissionID",
    "RequestedProcedureID", "PerformedProcedureStepID", "ScheduledProcedureStepID", "StudyDate",
    "SeriesDate", "AcquisitionDate", "ContentDate",
)
_PATTERNS = re.compile(
    r"\b\d{4}[-./]?\d{2}[-./]?\d{2}\b"  # dates
    r"|\b\d{1,2}[-./]\d{1,2}[-./]\d{2,4}\b"
    r"|\b\d{1,2}:\d{2}(:\d{2})?\b"  # times
    r"|[\w.+-]+@[\w-]+\.[\w.-]+"  # e-mail
    r"|\+?\(?\d[\d ()-]{6,}\d"  # phone-like and long numbers
    r"|\b\w*\d{5,}\w*\b"
)


def _tokens(value: object) -> Iterable[str]:
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    for v in values:
        text = str(v)
        yield text
        yield from re.split(r"[\^=\s,;/\\]+", text)


class Scrubber:
    """Removes the dataset's own identifiers and identifier-like patterns from text."""

    def __init__(self, identifiers: Iterable[object]) -> None:
        words = {t.strip() for v in identifiers if v not in (None, "") for t in _tokens(v)}
        words = sorted((w for w in words if len(w) >= 3 or (len(w) >= 2 and w.isdigit())), key=len, reverse=True)
        self._known = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None

    @classmethod
    def from_dataset(cls, ds) -> Scrubber:
        return cls(ds.get(k) for k in IDENTIFYING_KEYWORDS if k in ds)

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        return _PATTERNS.sub(REDACTED, text)
