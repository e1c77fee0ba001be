"""One DICOM file in, one anonymized DICOM file out: the unit the batch commands and exports use.

``process_dicom(src, dst, options, pixel_fn, change)``: read ``src``; when ``change`` changes pixels,
require a 2D projection radiograph the model takes (else :class:`Refused`), call
``pixel_fn(pixels, identity_key)`` and store its image; de-identify the headers with the markers
``change`` allows; write ``dst`` (a path, or a function of the de-identified data set giving one)
atomically. ``identity_key`` is a keyed hash of the patient, the same for every image of that patient.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from monai_anon_app.dicom.deidentifier import Deidentifier, DeidRecord
from monai_anon_app.dicom.files import DICOMDIR_CLASS, read_dicom, write_dicom
from monai_anon_app.dicom.mapping import append_mapping
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.pixel_change import PixelChange
from monai_anon_app.dicom.pixels import image_from_dataset, model_refusal, store_pixels
from monai_anon_app.errors import InputError
from monai_anon_app.runner import Refused, Skipped

__all__ = ["Destination", "PixelFn", "deidentifier", "process_dicom"]

PixelFn = Callable[[np.ndarray, str], np.ndarray]
#: where an output goes: a path, or a function of the de-identified data set (names from new UIDs)
Destination = Path | Callable[[Dataset], Path]


@lru_cache(maxsize=8)
def deidentifier(options: DeidOptions) -> Deidentifier:
    """One engine per options value, so its UID cache is shared across the files of a batch."""
    return Deidentifier(options)


def process_dicom(src: Path, dst: Destination, options: DeidOptions, pixel_fn: PixelFn | None,
                  change: PixelChange) -> tuple[Path, DeidRecord]:
    """Anonymize ``src`` into ``dst`` (see the module docstring); return the path written and the record.
    Raises :class:`Refused`, :class:`Skipped`, ``InputError`` (unreadable input) or ``ValueError`` (bad
    model output)."""
    if change.changed and pixel_fn is None:
        raise ValueError("pixel_fn is required when the pixels change")
    src = Path(src)
    ds = read_dicom(src)
    meta = getattr(ds, "file_meta", None)
    if str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")) == DICOMDIR_CLASS:
        raise Skipped("It is a DICOMDIR media index; build a new one from the de-identified files.", "DICOMDIR")
    if "SOPClassUID" not in ds:
        raise InputError(f"{src.name} has no SOP Class UID: a bare data set, not a storable DICOM instance")
    engine = deidentifier(options)
    image = new = None
    if change.changed:
        reason = model_refusal(ds)
        if reason:
            raise Refused(reason)
        image = image_from_dataset(ds, src.name)
        new = pixel_fn(image.pixels.copy(), engine.identity_key(ds))  # type: ignore[misc]
    record = engine.apply(ds, change)
    if image is not None:
        store_pixels(ds, new, image, change.derivation)
    path = Path(dst(ds) if callable(dst) else dst)
    write_dicom(ds, path)
    if options.mapping_file is not None:
        append_mapping(options.mapping_file, src, path, record)
    return path, record
