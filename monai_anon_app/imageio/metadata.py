"""Image files the project writes carry no free text: the one place NIfTI headers and PNG files are made
without it.

NIfTI-1 has free-text fields that tools fill with anything, patient names included (``descrip``,
``aux_file``, ``intent_name``, ``db_name`` and the Analyze leftover ``data_type``) and header extensions
that can hold whole documents (DICOM headers, XML). PNG has text chunks (tEXt, zTXt, iTXt), a time
chunk and EXIF. Every NIfTI written goes through :func:`clean_nifti_header` and every PNG through
:func:`save_png`. NRRD key/value pairs and MetaImage header fields are free text too: those files are
written from a new ITK image holding only pixels and geometry
(:func:`~monai_anon_app.imageio.itkio.write_volume`).
"""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["NIFTI_TEXT_FIELDS", "clean_nifti_header", "save_png"]

NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")


def clean_nifti_header(header: Any = None):
    """A new ``Nifti1Header`` with ``header``'s geometry and data fields (any nibabel header, or none)
    and every free-text field empty, without extensions."""

    out = nib.Nifti1Header() if header is None else nib.Nifti1Header.from_header(header)
    for name in NIFTI_TEXT_FIELDS:
        if name in out:
            out[name] = b""
    del out.extensions[:]
    return out


def save_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write the integer array ``pixels`` as a PNG holding only image data: no text, time or EXIF chunks
    (a fresh image is built from the array, so nothing from a file read earlier comes along)."""

    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")
