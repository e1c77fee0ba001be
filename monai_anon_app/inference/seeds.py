"""Which synthetic identity an image gets: the one rule every command and REST task follows."""

from __future__ import annotations

import hashlib

__all__ = ["seed_for"]


def seed_for(base_seed: int, key: str | None) -> int:
    """The seed of an image's synthetic identity.

    DICOM: ``key`` is the de-identifier's keyed patient key (``Deidentifier(options).identity_key(ds)``),
    so every image of a patient gets one identity per base seed (and de-identification key). Images
    without a patient (PNG, NIfTI: ``key`` None) use the base seed as it is.
    """
    if key is None:
        return int(base_seed)
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF
