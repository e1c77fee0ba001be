"""Finding, reading and atomically writing DICOM files."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import FileDataset
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from monai_anon_app.errors import InputError
from monai_anon_app.imageio.formats import sniff_format
from monai_anon_app.imageio.images import atomic_write

__all__ = ["DICOMDIR_CLASS", "is_dicom", "read_dicom", "write_dicom"]

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like DICOM (:func:`~monai_anon_app.imageio.formats.sniff_format`): the ``DICM``
    preamble, a raw data set starting with a group 0002/0008 element (files written without a preamble), or
    a DICOM suffix on a file whose content is no other format (its reader then says what is wrong with it)."""
    return sniff_format(path, names=True) == "dicom"


def read_dicom(path: str | os.PathLike) -> FileDataset:
    """Read a DICOM file (with or without its Part 10 header); :class:`InputError` with a reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise InputError(f"{path.name} is not readable DICOM ({exc.__class__.__name__}: {_short(exc)})") from None
    if len(ds._dict) == 0:
        raise InputError(f"{path.name} holds no DICOM data set")
    if any("End of file" in str(w.message) for w in caught) or _cut_short(ds, path):
        raise InputError(f"{path.name} is truncated: the file ends inside its last data element")
    if ds.is_little_endian is None or ds.is_implicit_VR is None:
        raise InputError(f"{path.name}: cannot tell how the data set is encoded")
    _harmonise(ds)
    return ds


def _cut_short(ds: FileDataset, path: Path) -> bool:
    """The last element is shorter than declared, or a partial element header follows it."""
    last = ds._dict[max(ds._dict)]
    if not getattr(last, "is_raw", False) or last.value is None or last.length == 0xFFFFFFFF:
        return False
    if len(last.value) < last.length:
        return True
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax == "1.2.840.10008.1.2.1.99":  # deflated: offsets refer to the inflated stream
        return False
    leftover = path.stat().st_size - (last.value_tell + last.length)
    return 0 < leftover < 8


def _harmonise(ds: FileDataset) -> None:
    """When the header names an explicit-VR syntax but the data set is implicit (or the reverse),
    decode every element so it is written in the declared syntax."""
    first = next(iter(ds._dict.values()))
    if getattr(first, "is_raw", False) and first.is_implicit_VR != ds.is_implicit_VR:
        try:
            ds.walk(lambda _ds, _elem: None)
        except Exception as exc:
            raise InputError(f"{Path(ds.filename or '?').name}: the data set is not encoded as its header says "
                             f"and cannot be decoded ({exc.__class__.__name__})") from None


def write_dicom(ds: FileDataset, path: str | os.PathLike) -> None:
    """Write ``ds`` as a Part 10 file, atomically (a temporary file renamed into place).

    Preamble, ``DICM``, the File Meta Information (Explicit VR Little Endian, with its group length)
    and the data set in its own encoding (deflated for the Deflated transfer syntax); Command Set and
    stray group 0002 elements are left out of the data set. Raw (undecoded) elements are copied as
    they are, which is what makes this as fast as pydicom's own round trip.
    """
    atomic_write(path, lambda tmp: _write_part10(ds, tmp))


_LONG_VRS = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"))


def _meta_bytes(meta) -> bytes:
    parts = []
    for tag in sorted(meta._dict):
        if tag == 0x00020000:
            continue
        elem = meta._dict[tag]
        vr = elem.VR or dictionary_VR(tag)
        value = elem.value
        if not elem.is_raw:
            value = value if isinstance(value, bytes) else str(value if value is not None else "").encode("ascii")
            if len(value) % 2:
                value += b"\0" if vr in ("UI", "OB") else b" "
        value = value or b""
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
        head += b"\0\0" + struct.pack("<I", len(value)) if vr in _LONG_VRS else struct.pack("<H", len(value))
        parts.append(head + value)
    body = b"".join(parts)
    return struct.pack("<HH", 2, 0) + b"UL" + struct.pack("<HI", 4, len(body)) + body


def _write_part10(ds: FileDataset, path: str) -> None:

    for tag in [t for t in ds._dict if t < 0x00030000]:  # command set, stray file meta
        del ds._dict[tag]
    syntax = ds.file_meta.get("TransferSyntaxUID")
    with open(path, "wb") as fh:
        fh.write(bytes(getattr(ds, "preamble", None) or b"\0" * 128) + b"DICM" + _meta_bytes(ds.file_meta))
        if syntax == DeflatedExplicitVRLittleEndian:
            buffer = DicomBytesIO()
            buffer.is_little_endian, buffer.is_implicit_VR = True, False
            write_dataset(buffer, ds)
            packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            data = packer.compress(buffer.getvalue()) + packer.flush()
            fh.write(data + (b"\0" if len(data) % 2 else b""))
        else:
            fp = DicomFileLike(fh)
            fp.is_little_endian, fp.is_implicit_VR = ds.is_little_endian, ds.is_implicit_VR
            write_dataset(fp, ds)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("…" if len(text) > 160 else "")
