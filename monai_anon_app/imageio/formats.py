"""What kind of file this is: the package's one format sniffing, by content.

:func:`sniff_format` reads a file's first bytes and answers ``"png"``, ``"nifti"``, ``"dicom"``,
``"nrrd"``, ``"mha"`` (MetaImage, ``.mha`` or ``.mhd``), ``"zip"`` or ``None``:

* PNG: the 8-byte PNG signature;
* zip: a local file header, or the end record of an empty archive;
* DICOM: ``DICM`` after the 128-byte preamble (tested first: the preamble is free bytes, and may start with a
  PNG or zip signature), or a data set written without the Part 10 header that starts with a group 0002/0008
  element (explicit VR, or a short implicit length);
* NIfTI: a NIfTI-1 (``n+1``/``ni1``) or NIfTI-2 header, gzip-compressed or not;
* NRRD: the ``NRRD000x`` magic line (attached data or a detached ``.nhdr`` header alike);
* MetaImage: ``Key = Value`` header lines, the first a MetaIO key, ``NDims`` among them.

Names are not trusted: only with ``names=True`` does a file whose content says nothing count as the format
its suffix claims (so that its reader can say what is wrong with it, instead of it passing as "not an
image"). Content always wins over the name.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

__all__ = ["DICOM_SUFFIXES", "FORMAT_NAMES", "FORMAT_SUFFIXES", "IMAGE_FORMATS", "IMAGE_KINDS", "IMAGE_SUFFIXES",
           "MHA_SUFFIXES", "NIFTI_SUFFIXES", "NRRD_SUFFIXES", "PNG_SUFFIXES", "format_from_name", "nifti_suffix",
           "sniff_bytes", "sniff_format"]

PNG_SUFFIXES = (".png",)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
MHA_SUFFIXES = (".mha", ".mhd")
#: the image formats, each with the suffixes its files go by (the first: how this package names a new file)
FORMAT_SUFFIXES = {"png": PNG_SUFFIXES, "nifti": NIFTI_SUFFIXES, "dicom": DICOM_SUFFIXES, "nrrd": NRRD_SUFFIXES,
                   "mha": MHA_SUFFIXES}
IMAGE_FORMATS = tuple(FORMAT_SUFFIXES)
IMAGE_SUFFIXES = tuple(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)
#: how messages name each format
FORMAT_NAMES = {"png": "PNG", "nifti": "NIfTI", "dicom": "DICOM", "nrrd": "NRRD", "mha": "MetaImage", "zip": "zip"}
#: the image formats as messages list them ("is not a …")
IMAGE_KINDS = "PNG, NIfTI, NRRD, MetaImage or DICOM"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
NRRD_MAGIC = re.compile(rb"NRRD000[1-9]\r?\n")
HEAD_BYTES = 4096  # enough for every check (NIfTI needs 352 bytes, a MetaImage header's first lines more)
_META_LINE = re.compile(rb"^[ \t]*([A-Za-z][A-Za-z0-9_]*)[ \t]*=")
#: keys a MetaImage header starts with (MetaIO writes Comment, if any, then ObjectType, ObjectSubType, NDims)
_META_FIRST = frozenset((b"Comment", b"ObjectType", b"ObjectSubType", b"NDims"))


def sniff_format(path: str | os.PathLike, names: bool = False) -> str | None:
    """``"png"``, ``"nifti"``, ``"dicom"``, ``"nrrd"``, ``"mha"``, ``"zip"`` or ``None`` from the first bytes of
    the file ``path`` (``None`` also when it cannot be read); with ``names``, a file whose content is none of
    them counts as what its suffix says (:func:`format_from_name`)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError:
        return None
    found = sniff_bytes(head)
    if found is None and names:
        return format_from_name(path)
    return found


def sniff_bytes(head: bytes) -> str | None:
    """:func:`sniff_format` on a file's first bytes (at least 352 of them where the file has as many)."""
    if head[128:132] == b"DICM":  # first: a DICOM preamble is free bytes, a PNG or zip signature among them
        return "dicom"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if NRRD_MAGIC.match(head):
        return "nrrd"
    if head.startswith(GZIP_MAGIC):
        try:
            inner = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(head, 352)
        except zlib.error:
            return None
        return "nifti" if _is_nifti_header(inner) else None
    if _is_nifti_header(head):
        return "nifti"
    if _is_metaimage_header(head):
        return "mha"
    if _is_raw_dicom(head):
        return "dicom"
    return None


def format_from_name(path: str | os.PathLike) -> str | None:
    """The image format the name of ``path`` claims by its suffix (case-insensitive), or ``None``."""
    name = Path(path).name.lower()
    return next((fmt for fmt, suffixes in FORMAT_SUFFIXES.items() if name.endswith(suffixes)), None)


def nifti_suffix(path: str | os.PathLike) -> str:
    """The suffix the NIfTI file ``path`` should be named with for nibabel, which goes by name: ``.nii.gz``
    when its content is gzip-compressed, else ``.nii``."""
    with open(path, "rb") as fh:
        return ".nii.gz" if fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC else ".nii"


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for order in ("<", ">"):
            if struct.unpack(order + "i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
                return True
    if len(head) >= 12:
        for order in ("<", ">"):
            if struct.unpack(order + "i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
                return True
    return False


def _is_metaimage_header(head: bytes) -> bool:
    keys = []
    for line in head.split(b"\n")[:64]:
        if not line.strip():
            continue
        match = _META_LINE.match(line)
        if match is None:
            break
        if not keys and match.group(1) not in _META_FIRST:
            return False
        keys.append(match.group(1))
        if match.group(1) == b"ElementDataFile":  # the last header line; pixel data may follow
            break
    return b"NDims" in keys


def _is_raw_dicom(head: bytes) -> bool:
    """A DICOM data set written without the Part 10 preamble: it starts with a group 0002 or 0008 element."""
    if len(head) < 8:
        return False
    for order in ("<", ">"):
        group, element = struct.unpack(order + "HH", head[:4])
        explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
        short = struct.unpack(order + "I", head[4:8])[0] < 0x1000
        if group in (0x0002, 0x0008) and element < 0x0100 and (explicit_vr or short):
            return True
    return False
