"""DICOM pixels in and out: real-unit images for the model, and the model's image written back.

Reading gives ``(H, W)`` float32 in real units (modality rescale applied); MONOCHROME1 images are
inverted within their value range (``lo + hi - v``) so bright means dense as in MONOCHROME2. Writing
undoes exactly that, quantises to the original stored representation (bits, sign, rescale) and updates
every attribute that describes the pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from monai_anon_app.dicom.files import read_dicom
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.images import Image2D

__all__ = ["MODEL_MODALITIES", "image_from_dataset", "model_refusal", "read_dicom_image", "store_pixels"]

MODEL_MODALITIES = ("CR", "DX")
SECONDARY_CAPTURE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
})
PROJECTION_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1",  # CR
    "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",  # DX presentation / processing
})
LOSSY_METHODS = {  # transfer syntax -> Lossy Image Compression Method
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1", "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1", "1.2.840.10008.1.2.4.100": "ISO_13818_2",
}
_STALE = (0x00280106, 0x00280107, 0x00281055, 0x00283010, 0x00281056, 0x7FE00001, 0x7FE00002, 0x00880200)


def _describe(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    name = UID(str(sop)).name if sop else "object without SOP class"
    return f"{ds.get('Modality', '?')} {name}"


def _image_problem(ds: Dataset) -> str | None:
    """Why ``ds`` is not a single-frame greyscale image (``None`` if it is one)."""
    if "PixelData" not in ds:
        kind = "a DICOMDIR" if "DirectoryRecordSequence" in ds else f"a {_describe(ds)}"
        return f"it is {kind} without pixel data"
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"it is a multi-frame image ({frames} frames); only single 2D images are supported"
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        what = photometric or "unknown photometric interpretation"
        return f"it is a colour image ({what}); only greyscale is supported"
    if int(ds.get("BitsAllocated", 0) or 0) not in (8, 16):
        return f"it stores {ds.get('BitsAllocated')} bits per pixel; only 8 or 16 are supported"
    if "ModalityLUTSequence" in ds:
        return "it uses a Modality LUT Sequence, which cannot be written back exactly"
    return None


def model_refusal(ds: Dataset) -> str | None:
    """Why the model cannot take ``ds`` (one sentence), or ``None``: it takes single-frame greyscale
    projection radiographs (CR, DX, or secondary captures of them)."""
    problem = _image_problem(ds)
    if problem:
        return problem[0].upper() + problem[1:] + "."
    modality = str(ds.get("Modality", "")).strip().upper()
    sop = str(ds.get("SOPClassUID", "")).strip()
    if sop in PROJECTION_CLASSES or (modality in MODEL_MODALITIES and (sop in SECONDARY_CAPTURE_CLASSES or not sop)):
        return None
    return f"It is a {_describe(ds)}, not a 2D projection radiograph (CR, DX or a secondary capture of one)."


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated)
    if int(ds.get("PixelRepresentation", 0) or 0):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _rescale(ds: Dataset) -> tuple[float, float]:
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def image_from_dataset(ds: Dataset, name: str = "image") -> Image2D:
    """The pixels of a single-frame greyscale image as an :class:`Image2D` (real units, bright = dense)."""
    problem = _image_problem(ds)
    if problem:
        raise InputError(f"{name}: {problem}")
    try:
        stored = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = syntax.name if syntax is not None else "unknown transfer syntax"
        raise InputError(f"{name}: cannot decode its pixel data ({what}: {exc.__class__.__name__})") from None
    if stored.ndim != 2:
        raise InputError(f"{name}: pixel data has shape {stored.shape}; only single 2D images are supported")
    slope, intercept = _rescale(ds)
    lo_s, hi_s = _stored_range(ds)
    lo, hi = sorted((lo_s * slope + intercept, hi_s * slope + intercept))
    pixels = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    photometric = str(ds.PhotometricInterpretation).strip()
    if photometric == "MONOCHROME1":
        pixels = np.float32(lo + hi) - pixels
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    meta = {"spacing": (float(spacing[0]), float(spacing[1])), "photometric": photometric, "slope": slope,
            "intercept": intercept, "range": (lo, hi), "stored_range": (lo_s, hi_s),
            "bits_allocated": int(ds.BitsAllocated), "signed": bool(int(ds.get("PixelRepresentation", 0) or 0)),
            "modality": str(ds.get("Modality", "")), "transfer_syntax": str(ds.file_meta.TransferSyntaxUID)
            if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else ""}
    return Image2D(np.ascontiguousarray(pixels), "dicom", meta)


def read_dicom_image(path: str | os.PathLike) -> Image2D:
    """Read a single-frame greyscale DICOM image; :class:`InputError` for multi-frame/3D, colour and
    non-image objects, with the reason."""
    path = Path(path)
    image = image_from_dataset(read_dicom(path), path.name)
    image.meta["path"] = str(path)
    return image


def _window(values: np.ndarray) -> tuple[str, str]:
    lo, hi = float(values.min()), float(values.max())
    return f"{(lo + hi) / 2:.6g}", f"{max(hi - lo, 1.0):.6g}"


def store_pixels(ds: Dataset, pixels: np.ndarray, like: Image2D, derivation: str) -> None:
    """Replace the pixel data of ``ds`` with ``pixels`` (same shape and units as ``like``, the image
    read from ``ds``) and update the attributes that describe them: Rows/Columns, rescale kept, window
    recomputed, photometric kept (MONOCHROME1 re-inverted), transfer syntax made uncompressed, lossy
    compression history kept, Image Type DERIVED\\SECONDARY and the Derivation Description."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.shape != like.pixels.shape:
        raise ValueError(f"the model returned shape {pixels.shape} for an image of shape {like.pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError("the model returned NaN or infinite pixel values")
    meta = like.meta
    lo, hi = meta["range"]
    real = np.float32(lo + hi) - pixels if meta["photometric"] == "MONOCHROME1" else pixels
    stored = np.rint((real - np.float32(meta["intercept"])) / np.float32(meta["slope"]))
    stored = np.clip(stored, *meta["stored_range"])
    dtype = np.dtype(("i" if meta["signed"] else "u") + str(meta["bits_allocated"] // 8))
    dtype = dtype.newbyteorder("<" if ds.is_little_endian else ">")
    data = stored.astype(dtype).tobytes()
    if len(data) % 2:
        data += b"\0"

    syntax = meta.get("transfer_syntax", "")
    lossy = str(ds.get("LossyImageCompression", "")).strip() == "01" or syntax in LOSSY_METHODS
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta and file_meta.TransferSyntaxUID.is_compressed:
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.is_implicit_VR, ds.is_little_endian = False, True
    for tag in _STALE:
        ds._dict.pop(tag, None)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds[0x7FE00010] = DataElement(0x7FE00010, "OB" if meta["bits_allocated"] == 8 else "OW", data)
    center, width = _window(stored * meta["slope"] + meta["intercept"])
    ds.WindowCenter, ds.WindowWidth = center, width
    if lossy:
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and syntax in LOSSY_METHODS:
            ds.LossyImageCompressionMethod = LOSSY_METHODS[syntax]
    elif "LossyImageCompression" in ds:
        ds.LossyImageCompression = "00"
    old_type = list(ds.get("ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *[str(v) for v in old_type[2:]]]
    ds.DerivationDescription = derivation[:1024]
