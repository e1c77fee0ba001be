"""Keyed, deterministic replacements: UIDs, patient pseudonyms, identity keys and date offsets.

Everything is an HMAC-SHA256 of the original value under the user's key, so the same input and key
give the same output in every file and batch, and nobody without the key can link output to input.
Replacement UIDs and pseudonyms carry a 32-bit keyed check, so a second pass with the same key
recognises its own output and leaves it alone (de-identification is idempotent).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from pydicom.uid import UID_dictionary

from monai_anon_app.errors import InputError

__all__ = ["KeyRing", "is_well_known_uid", "load_key"]

_DICOM_ROOT = "1.2.840.10008."
_PSEUDONYM = re.compile(r"^ANON-([0-9A-F]{12})([0-9A-F]{8})$")
MIN_DAYS, SPAN_DAYS = 366, 3287  # modified dates move 1 to 10 years back
_CACHE_LIMIT = 200_000


def is_well_known_uid(uid: str) -> bool:
    """True for UIDs defined by the standard (SOP classes, transfer syntaxes, coding schemes ...)."""
    if uid.startswith(_DICOM_ROOT):
        return True

    return uid in UID_dictionary


def load_key(key: str | None = None, key_file: str | os.PathLike | None = None) -> bytes | None:
    """The key from ``--key`` or ``--key-file``; a missing key file is created with a fresh random key.

    Returns ``None`` when neither is given (the caller then uses a random key for this run only).
    """
    if key is not None and key_file is not None:
        raise ValueError("give either --key or --key-file, not both")
    if key is not None:
        if len(key.encode()) < 8:
            raise InputError("the key must be at least 8 characters long")
        return key.encode()
    if key_file is None:
        return None
    path = Path(key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        text = path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"cannot read the key file {path} ({exc.strerror})") from None
    if len(text) < 8:
        raise InputError(f"the key file {path} holds fewer than 8 bytes; delete it to make a new one")
    return text


class KeyRing:
    """All keyed derivations for one key, with a cache for the UID map."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._uids: dict[str, str] = {}

    def _mac(self, purpose: bytes, value: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + value, hashlib.sha256).digest()

    # -- UIDs ------------------------------------------------------------------------------------------
    def uid(self, uid: str) -> str:
        """The replacement for ``uid``: ``2.25.<UUIDv8 integer>``; well-known and own UIDs unchanged."""
        out = self._uids.get(uid)
        if out is None:
            out = uid if is_well_known_uid(uid) or self._is_own_uid(uid) else self._new_uid(uid)
            if len(self._uids) >= _CACHE_LIMIT:  # a cache, not a record: bounded for huge batches
                self._uids.clear()
            self._uids[uid] = out
        return out

    def _new_uid(self, uid: str) -> str:
        raw = bytearray(self._mac(b"uid", uid.encode())[:12])
        raw[6] = (raw[6] & 0x0F) | 0x80  # UUID version 8 (custom)
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        check = self._mac(b"uid-check", bytes(raw))[:4]
        return "2.25." + str(int.from_bytes(bytes(raw) + check, "big"))

    def _is_own_uid(self, uid: str) -> bool:
        if not uid.startswith("2.25.") or not uid[5:].isdigit() or len(uid) > 44:
            return False
        full = int(uid[5:])
        if full >> 128:
            return False
        data = full.to_bytes(16, "big")
        return hmac.compare_digest(self._mac(b"uid-check", data[:12])[:4], data[12:])

    # -- patients --------------------------------------------------------------------------------------
    def pseudonym(self, patient_id: str) -> str:
        """``ANON-`` + 20 hex digits for a patient ID (a pseudonym maps to itself)."""
        patient_id = patient_id.strip()
        if self.is_own_pseudonym(patient_id):
            return patient_id
        body = self._mac(b"patient", patient_id.encode()).hex().upper()[:12]
        return f"ANON-{body}{self._mac(b'patient-check', body.encode()).hex().upper()[:8]}"

    def is_own_pseudonym(self, value: str) -> bool:
        match = _PSEUDONYM.match(value.strip())
        if not match:
            return False
        expected = self._mac(b"patient-check", match.group(1).encode()).hex().upper()[:8]
        return hmac.compare_digest(expected, match.group(2))

    def identity_key(self, patient_id: str) -> str:
        """A keyed hash naming the patient for the model (same for the patient's pseudonym)."""
        return self._mac(b"identity", self.pseudonym(patient_id).encode()).hex()[:32]

    def date_offset(self, patient_id: str) -> int:
        """Whole days (negative, 1–10 years) added to every date of this patient."""
        n = int.from_bytes(self._mac(b"dates", self.pseudonym(patient_id).encode())[:4], "big")
        return -(MIN_DAYS + n % SPAN_DAYS)

    def tag(self, purpose: str, value: str, length: int = 8) -> str:
        """A short keyed hex token for ``value`` (e.g. an AE title pseudonym)."""
        return self._mac(purpose.encode(), value.encode()).hex().upper()[:length]
