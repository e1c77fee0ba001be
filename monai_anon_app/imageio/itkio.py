"""Image files through ITK: headers (geometry, pixel type) of any format ITK reads, and NRRD / MetaImage
pixels in and out.

The ITK reader of each format is chosen from the sniffed content (:mod:`~monai_anon_app.imageio.formats`),
never from the file name, so uploads and session files with any name read the same. DICOM headers go
through GDCM, as in 3D Slicer: the geometry it derives (Image Position/Orientation (Patient), Imager Pixel
Spacing first for projection radiographs) is the one results must overlay.

Written files are built from a new ITK image holding only pixels and geometry: nothing from a file read
earlier comes along (NRRD key/value pairs and MetaImage header fields are free text that can hold patient
names, and ITK writes whatever the image's metadata dictionary holds).

A detached header (NRRD ``data file:``, MetaImage ``ElementDataFile`` other than ``LOCAL``) makes ITK open
whatever file it names, absolute or ``../`` paths and lists included: :func:`detached_data_file` tells
such headers from the text alone, so that a server can refuse them before ITK reads anything.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import itk
import numpy as np

from monai_anon_app.imageio.geometry import Geometry

__all__ = ["HEADER_LIMIT", "ITK_FORMATS", "WRITE_SUFFIX", "Header", "detached_data_file", "load_readers", "read_header",
           "read_pixels", "write_volume"]

#: the ITK ImageIO of each format
ITK_FORMATS = {"nrrd": "NrrdImageIO", "mha": "MetaImageIO", "dicom": "GDCMImageIO", "nifti": "NiftiImageIO",
               "png": "PNGImageIO"}
#: the suffix a file is written under, so that ITK puts header and pixels into it (``.nhdr``/``.mhd`` would
#: make it write the pixels into a second, detached file)
WRITE_SUFFIX = {"nrrd": ".nrrd", "mha": ".mha"}
#: the most bytes of an NRRD or MetaImage file :func:`detached_data_file` reads; a text header that does not
#: end within them counts as detached
HEADER_LIMIT = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")  # teem's airOneLine: each of them ends an NRRD header line
_META_LOCAL = (b"LOCAL", b"Local", b"local")  # the ElementDataFile values MetaIO takes for "pixels follow"
_DTYPES = {"unsigned_char": "uint8", "char": "int8", "unsigned_short": "uint16", "short": "int16",
           "unsigned_int": "uint32", "int": "int32", "unsigned_long": "uint64", "long": "int64",
           "unsigned_long_long": "uint64", "long_long": "int64", "float": "float32", "double": "float64"}


@dataclass(frozen=True)
class Header:
    """What a file's header says: its :class:`Geometry`, pixel ``dtype`` (a numpy name) and ``components``
    per pixel (1 for greyscale)."""

    geometry: Geometry
    dtype: str
    components: int


def load_readers() -> None:
    """Load ITK's image I/O modules now. ``import itk`` is lazy, and the first reader or writer a process
    makes loads every I/O module (seconds): a process that forks workers can pay that once, before forking."""
    for name in ITK_FORMATS.values():
        getattr(itk, name)


def detached_data_file(path: str | os.PathLike, fmt: str) -> bool:
    """Whether the ``fmt`` file ``path`` is a header whose pixel data ITK would read from another file, from its
    text header alone (nothing is decoded, no other file is opened): for ``"nrrd"`` any ``data file:`` field
    (a name, a ``%d`` pattern or ``LIST``), for ``"mha"`` an ``ElementDataFile`` other than ``LOCAL``. A header
    this cannot vouch for (one MetaIO could parse differently from its lines, one not ended within
    :data:`HEADER_LIMIT` bytes, a file that cannot be read) counts as detached too. Other formats: ``False``.

    ITK opens any file such a header names, absolute or ``../`` paths included, and returns its bytes as
    pixels: a server must refuse these headers (a local user reading their own files may read them)."""
    if fmt not in ("nrrd", "mha"):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_LIMIT + 1)
    except OSError:
        return True
    return _nrrd_detached(head) if fmt == "nrrd" else _metaimage_detached(head)


def _nrrd_detached(head: bytes) -> bool:
    """teem (ITK's NRRD reader) reads header lines (ended by ``\\n``, ``\\r`` or ``\\r\\n``) up to the first
    empty one, and takes ``data file: …`` / ``datafile: …`` in any case as the data file field: refuse any
    line that starts so, whatever its spacing (a superset of teem's exact names)."""
    lines = _LINE_END.split(head)
    for line in lines[1:]:  # the first line is the magic
        if not line:
            return False  # the end of the header: attached data follow
        if re.sub(rb"\s+", b"", line).lower().startswith(b"datafile"):
            return True
    return len(head) > HEADER_LIMIT  # header not ended within the limit: cannot tell


def _metaimage_detached(head: bytes) -> bool:
    """MetaIO reads ``Key = Value`` (or ``Key : Value``) fields up to ``ElementDataFile`` (exact case), the
    last. Its reader does not go by lines: a key ended by ``\\r`` or by the end of the line reads its value
    from the next separator on, whatever line that is, and a NUL ends a key early. So every line before
    ``ElementDataFile`` must be blank or hold a key, then a separator, before any ``\\r`` or NUL; any other
    header counts as detached, as does one whose ``ElementDataFile`` (in any case) is not ``LOCAL``."""
    for raw in head.split(b"\n"):
        line = raw.lstrip(b" \t\r\v\f")
        if not line:
            continue
        separator = re.search(rb"[=:]", line)
        if separator is None or b"\0" in raw or b"\r" in line[:separator.start()]:
            return True
        key = line[:separator.start()].rstrip(b" \t")
        if key.lower() == b"elementdatafile":
            value = line[separator.start():].lstrip(b"=: \t").rstrip(b" \t\r\v\f")
            if value not in _META_LOCAL:
                return True
            if key == b"ElementDataFile":
                return False  # MetaIO's last header field: the pixels follow in this file
    return True  # no ElementDataFile: not a MetaImage MetaIO reads, or a header past the limit


def _image_io(fmt: str):
    return getattr(itk, ITK_FORMATS[fmt]).New()


def read_header(path: str | os.PathLike, fmt: str) -> Header:
    """The header of the ``fmt`` file ``path`` (no pixels decoded); ITK's ``RuntimeError`` if unreadable."""
    io = _image_io(fmt)
    io.SetFileName(str(path))
    io.ReadImageInformation()
    n = int(io.GetNumberOfDimensions())
    if n < 1:
        raise RuntimeError("the header declares no dimensions")
    geometry = Geometry(size=tuple(int(io.GetDimensions(a)) for a in range(n)),
                        spacing=tuple(float(io.GetSpacing(a)) for a in range(n)),
                        origin=tuple(float(io.GetOrigin(a)) for a in range(n)),
                        direction=np.array([[float(v) for v in io.GetDirection(a)] for a in range(n)]).T)
    kind = str(io.GetComponentTypeAsString(io.GetComponentType()))
    return Header(geometry, _DTYPES.get(kind, kind), int(io.GetNumberOfComponents()))


def read_pixels(path: str | os.PathLike, fmt: str, dimension: int) -> np.ndarray:
    """The pixels of the greyscale ``fmt`` file ``path`` of ``dimension`` (2 or 3, from :func:`read_header`) as
    float32, in ITK's numpy order (the last index axis first: ``(k, j, i)``); ITK's ``RuntimeError`` if
    unreadable. (``itk.imread`` with a pixel type picks the reader by file name, which uploads do not have.)"""
    reader = itk.ImageFileReader[itk.Image[itk.F, dimension]].New(FileName=str(path), ImageIO=_image_io(fmt))
    reader.Update()
    return np.asarray(itk.array_from_image(reader.GetOutput()), dtype=np.float32)


def write_volume(path: str | os.PathLike, pixels: np.ndarray, geometry: Geometry, fmt: str) -> None:
    """Write ``pixels`` (ITK's numpy order, the shape of ``geometry``) as a float32 ``fmt`` file (``nrrd`` or
    ``mha``, uncompressed) holding the pixels and ``geometry`` and nothing else. ``path`` should end in
    :data:`WRITE_SUFFIX`."""
    data = np.ascontiguousarray(pixels, dtype=np.float32)
    if data.shape != tuple(reversed(geometry.size)):
        raise ValueError(f"pixels of shape {data.shape} do not fit the geometry of size {geometry.size}")
    image = itk.image_from_array(data)
    image.SetSpacing([float(v) for v in geometry.spacing])
    image.SetOrigin([float(v) for v in geometry.origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(geometry.direction, dtype=np.float64)))
    itk.imwrite(image, str(path), compression=False, imageio=_image_io(fmt))
