"""One DICOM file in, one anonymized DICOM file out: the unit the batch commands and exports use.

``process_dicom(src, dst, options, pixel_fn, headers_only, derivation)``: read ``src``; unless
``headers_only``, require a 2D projection radiograph the model takes (else :class:`Refused`), call
``pixel_fn(pixels, identity_key)`` and store its image; de-identify the headers; write ``dst``
atomically. ``identity_key`` is a keyed hash of the patient, the same for every image of that patient.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..data.io import InputError
from .engine import Deidentifier, DeidRecord
from .files import DICOMDIR_CLASS, read_dicom, write_dicom
from .mapping import append_mapping
from .options import DeidOptions
from .pixels import image_from_dataset, model_refusal, store_pixels

__all__ = ["PixelFn", "Refused", "Skipped", "deidentifier", "process_dicom"]

PixelFn = Callable[[np.ndarray, str], np.ndarray]


class Refused(Exception):
    """The model cannot take this image; the message is the reason, one sentence."""


class Skipped(Refused):
    """Not an object to process at all (a DICOMDIR media index): count it as skipped, not refused."""


@lru_cache(maxsize=8)
def deidentifier(options: DeidOptions) -> Deidentifier:
    """One engine per options value, so its UID cache is shared across the files of a batch."""
    return Deidentifier(options)


def process_dicom(src: Path, dst: Path, options: DeidOptions, pixel_fn: PixelFn | None, headers_only: bool,
                  derivation: str) -> DeidRecord:
    """Anonymize ``src`` into ``dst`` (see the module docstring). Raises :class:`Refused`,
    :class:`Skipped`, ``InputError`` (unreadable input) or ``ValueError`` (bad model output)."""
    if not headers_only and pixel_fn is None:
        raise ValueError("pixel_fn is required unless headers_only is set")
    src, dst = Path(src), Path(dst)
    ds = read_dicom(src)
    meta = getattr(ds, "file_meta", None)
    if str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")) == DICOMDIR_CLASS:
        raise Skipped("It is a DICOMDIR media index; build a new one from the de-identified files.")
    if "SOPClassUID" not in ds:
        raise InputError(f"{src.name} has no SOP Class UID: a bare data set, not a storable DICOM instance")
    engine = deidentifier(options)
    image = new = None
    if not headers_only:
        reason = model_refusal(ds)
        if reason:
            raise Refused(reason)
        image = image_from_dataset(ds, src.name)
        new = pixel_fn(image.pixels.copy(), engine.identity_key(ds))  # type: ignore[misc]
    record = engine.apply(ds, pixels_cleaned=not headers_only)
    if image is not None:
        store_pixels(ds, new, image, derivation)
    write_dicom(ds, dst)
    if options.mapping_file is not None:
        append_mapping(options.mapping_file, src, dst, record)
    return record
