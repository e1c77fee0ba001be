"""De-identification options (PS3.15 E.3) and the CID 7050 codes that declare them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["OPTIONS", "DeidOptions", "Ps315Option", "SafePrivate", "new_key"]

# (private creator, group, element offset 0x00-0xFF) of a private attribute known to hold no identity
SafePrivate = tuple[str, int, int]

@dataclass(frozen=True)
class Ps315Option:
    """One PS3.15 E.3 option: its Table E.1-1 column, its CID 7050 keyword and what it keeps."""

    column: str
    keyword: str
    help: str


#: every option a user can switch on, in table order; command-line flags and REST options derive from it
OPTIONS: dict[str, Ps315Option] = {
    "retain_full_dates": Ps315Option(
        "rtnLongFullDatesOpt", "RetainLongitudinalTemporalInformationFullDatesOption",
        "keep dates and times unchanged (excludes retain modified dates)"),
    "retain_modified_dates": Ps315Option(
        "rtnLongModifDatesOpt", "RetainLongitudinalTemporalInformationModifiedDatesOption",
        "keep intervals: shift every date by one keyed offset per patient"),
    "retain_patient_characteristics": Ps315Option(
        "rtnPatCharsOpt", "RetainPatientCharacteristicsOption", "keep sex, age, size, weight and similar"),
    "retain_device_identity": Ps315Option(
        "rtnDevIdOpt", "RetainDeviceIdentityOption", "keep device serial numbers, station names and similar"),
    "retain_institution_identity": Ps315Option(
        "rtnInstIdOpt", "RetainInstitutionIdentityOption", "keep institution name, address and department"),
    "clean_descriptors": Ps315Option(
        "cleanDescOpt", "CleanDescriptorsOption", "keep descriptions and comments with identifiers removed"),
    "retain_uids": Ps315Option("rtnUIDsOpt", "RetainUidsOption", "keep original UIDs"),
    "retain_safe_private": Ps315Option(
        "rtnSafePrivOpt", "RetainSafePrivateOption",
        "keep private attributes known to be safe (all others are dropped)"),
}

# Numeric acquisition parameters that vendors keep in private blocks (diffusion b-values and gradient
# directions); PS3.15 Table E.3.10-1 lists them among the safe private attributes. Extend per site with
# ``DeidOptions(safe_private=...)``: the full Table E.3.10-1 is not part of the shared data.
DEFAULT_SAFE_PRIVATE: frozenset[SafePrivate] = frozenset({
    ("SIEMENS MR HEADER", 0x0019, 0x0C),  # B_value
    ("SIEMENS MR HEADER", 0x0019, 0x0D),  # DiffusionDirectionality
    ("SIEMENS MR HEADER", 0x0019, 0x0E),  # DiffusionGradientDirection
    ("SIEMENS MR HEADER", 0x0019, 0x27),  # B_matrix
    ("GEMS_PARM_01", 0x0043, 0x39),  # slop_int_6.. (b-value)
    ("Philips MR Imaging DD 001", 0x2001, 0x03),  # Diffusion B-Factor
})


def new_key() -> bytes:
    """A fresh random 256-bit key (UIDs and dates then stay consistent only within one run)."""
    return secrets.token_bytes(32)


@dataclass(frozen=True)
class DeidOptions:
    """Which PS3.15 options to apply, and the secret key behind UIDs, pseudonyms and date offsets.

    ``retain_modified_dates`` and ``retain_full_dates`` are mutually exclusive (``ValueError``).
    ``key`` (bytes or text) makes the output deterministic: same input and key, same output, in every
    batch. ``mapping_file`` (CSV) is written only when given: it is the one thing linking output to input.
    """

    retain_modified_dates: bool = False
    retain_full_dates: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    clean_descriptors: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    key: bytes = field(default_factory=new_key, repr=False)
    mapping_file: Path | None = None
    safe_private: frozenset[SafePrivate] = DEFAULT_SAFE_PRIVATE

    def __post_init__(self) -> None:
        if self.retain_modified_dates and self.retain_full_dates:
            raise ValueError("--retain-modified-dates and --retain-full-dates exclude each other; choose one")
        key = self.key
        if isinstance(key, str):
            key = key.encode("utf-8")
        if not isinstance(key, (bytes, bytearray)) or len(key) < 8:
            raise ValueError("the de-identification key must be at least 8 bytes long")
        object.__setattr__(self, "key", bytes(key))
        if self.mapping_file is not None:
            object.__setattr__(self, "mapping_file", Path(self.mapping_file))
        object.__setattr__(self, "safe_private", frozenset(self.safe_private))

    @property
    def flags(self) -> tuple[str, ...]:
        """Names of the options switched on, in table order."""
        return tuple(name for name in OPTIONS if getattr(self, name))

    @property
    def columns(self) -> tuple[str, ...]:
        """Table E.1-1 option columns switched on."""
        return tuple(OPTIONS[name].column for name in self.flags)

    @property
    def temporal(self) -> str:
        """Value for Longitudinal Temporal Information Modified (0028,0303)."""
        if self.retain_full_dates:
            return "UNMODIFIED"
        return "MODIFIED" if self.retain_modified_dates else "REMOVED"

    def code_keywords(self, clean_pixels: bool = False) -> list[str]:
        """CID 7050 keywords for exactly what is applied (Basic Profile first); ``clean_pixels`` only for a
        full anonymization of the pixels (see :mod:`~monai_anon_app.dicom.pixel_change`)."""
        out = ["BasicApplicationConfidentialityProfile"]
        if clean_pixels:
            out += ["CleanPixelDataOption", "CleanRecognizableVisualFeaturesOption"]
        return out + [OPTIONS[name].keyword for name in self.flags]

    def describe(self) -> str:
        """Human-readable summary (no key material)."""
        on = [f.name for f in fields(self) if f.type == "bool" and getattr(self, f.name)]
        return "basic profile" + (" + " + ", ".join(on) if on else "")
