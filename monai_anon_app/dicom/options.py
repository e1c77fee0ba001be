"""De-identification options (PS3.15 E.3) and the CID 7050 codes that declare them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["OPTION_COLUMNS", "DeidOptions", "SafePrivate", "new_key"]

# (private creator, group, element offset 0x00-0xFF) of a private attribute known to hold no identity
SafePrivate = tuple[str, int, int]

# option flag -> (Table E.1-1 column, CID 7050 keyword in ``codes.cid7050``)
OPTION_COLUMNS: dict[str, tuple[str, str]] = {
    "retain_full_dates": ("rtnLongFullDatesOpt", "RetainLongitudinalTemporalInformationFullDatesOption"),
    "retain_modified_dates": ("rtnLongModifDatesOpt",
                              "RetainLongitudinalTemporalInformationModifiedDatesOption"),
    "retain_patient_characteristics": ("rtnPatCharsOpt", "RetainPatientCharacteristicsOption"),
    "retain_device_identity": ("rtnDevIdOpt", "RetainDeviceIdentityOption"),
    "retain_institution_identity": ("rtnInstIdOpt", "RetainInstitutionIdentityOption"),
    "clean_descriptors": ("cleanDescOpt", "CleanDescriptorsOption"),
    "retain_uids": ("rtnUIDsOpt", "RetainUidsOption"),
    "retain_safe_private": ("rtnSafePrivOpt", "RetainSafePrivateOption"),
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
        return tuple(name for name in OPTION_COLUMNS if getattr(self, name))

    @property
    def columns(self) -> tuple[str, ...]:
        """Table E.1-1 option columns switched on."""
        return tuple(OPTION_COLUMNS[name][0] for name in self.flags)

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
        return out + [OPTION_COLUMNS[name][1] for name in self.flags]

    def describe(self) -> str:
        """Human-readable summary (no key material)."""
        on = [f.name for f in fields(self) if f.type == "bool" and getattr(self, f.name)]
        return "basic profile" + (" + " + ", ".join(on) if on else "")
