"""Images in and out of the infer tasks: one 2D image from a file or a DICOM series folder, and float
NIfTI results in the input's geometry and intensity units.

Input geometry becomes a NIfTI (RAS) affine for the axes ``(i, j, k) = (column, row, slice)``
(:class:`~monai_anon_app.imageio.geometry.Geometry`):

* NIfTI input: its own affine and header, unchanged;
* NRRD and MetaImage input (a 2D image, or a single-slice volume as 3D Slicer saves one): the geometry ITK
  reads from its header; only single-file images (a header naming a separate data file is refused before ITK
  reads anything: :func:`~monai_anon_app.imageio.itkio.detached_data_file`);
* DICOM input: the geometry ITK/GDCM (and so 3D Slicer) read from the file (Image Position/Orientation
  (Patient) when present, else the origin and the identity LPS direction; Imager Pixel Spacing first
  for CR/DX, else Pixel Spacing); a file GDCM cannot read keeps the origin, the identity direction and
  the pixel spacing pydicom found;
* PNG input: 1 mm pixels, identity LPS direction.

Intensities are the input's own units: for DICOM the modality rescale applied and MONOCHROME1 shown
bright-is-dense (``lo + hi - v`` over the stored range), which is again what ITK/GDCM load.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from monai_anon_app.dicom.files import is_dicom, read_dicom
from monai_anon_app.dicom.pixels import image_from_dataset, model_refusal
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.formats import FORMAT_NAMES, FORMAT_SUFFIXES, IMAGE_KINDS, nifti_suffix, sniff_format
from monai_anon_app.imageio.images import Image2D, atomic_write, read_image
from monai_anon_app.imageio.itkio import detached_data_file, read_header
from monai_anon_app.imageio.metadata import clean_nifti_header
from monai_anon_app.server.request_errors import RequestError

__all__ = ["SUFFIX", "UPLOAD_NAME", "ZIP_REFUSED", "InputImage", "check_id", "client_name", "dicom_files",
           "load_input", "nifti_bytes", "unpack_zip", "upload_suffix", "write_result"]

#: the suffix an upload of each sniffed format is saved under: the first of the format's suffixes (a NIfTI
#: upload: ``.nii`` or ``.nii.gz`` by content, :func:`upload_suffix`)
SUFFIX = {fmt: suffixes[0] for fmt, suffixes in FORMAT_SUFFIXES.items()} | {"zip": ".zip"}
#: what a single-file NRRD / MetaImage header looks like, for the message refusing a detached one
DETACHED_HINT = {"nrrd": "pixel data after the header, no data file field",
                 "mha": "ElementDataFile = LOCAL, pixel data after the header"}
#: how messages name an upload that came without a usable file name
UPLOAD_NAME = "the uploaded file"
MAX_ZIP_MEMBERS = 10_000
ZIP_REFUSED = "is a zip archive; only the export task takes archives (of DICOM files)"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass
class InputImage:
    """One 2D input: ``image`` (model-facing pixels), the NIfTI ``affine`` of its geometry, its ``name``
    and the DICOM files it came from (empty for PNG/NIfTI)."""

    image: Image2D
    affine: np.ndarray
    name: str
    dicom_files: list[Path] = field(default_factory=list)


def check_id(value: str, what: str = "image id") -> str:
    """A datastore id, or 400: ids never contain path separators or ``..``."""
    if "/" in value or "\\" in value or ".." in value or "\x00" in value or value.startswith("~"):
        raise RequestError(400, f"{what} {value[:80]!r} is not allowed: ids cannot contain path components")
    if not ID_PATTERN.match(value):
        raise RequestError(400, f"{what} {value[:80]!r} is not a valid id (letters, digits, '.', '_' and '-')")
    return value


def client_name(filename: str | None) -> str:
    """How messages name an upload: the client's file name (no folders, printable, at most 120 characters
    and 200 bytes, so that it is a valid file name too), else :data:`UPLOAD_NAME`. Never the name of a file
    on the server."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = " ".join("".join(ch for ch in base if ch.isprintable()).split())[:120]
    while len(base.encode("utf-8", "surrogatepass")) > 200:
        base = base[:-1]
    return base if base.strip(".") else UPLOAD_NAME


def upload_suffix(path: str | os.PathLike, fmt: str) -> str:
    """The suffix the file ``path`` of the sniffed format ``fmt`` is saved under: :data:`SUFFIX`, for NIfTI
    by its content (:func:`~monai_anon_app.imageio.formats.nifti_suffix`: nibabel goes by the name)."""
    return nifti_suffix(path) if fmt == "nifti" else SUFFIX[fmt]


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (a downloaded series or a multi-file session)."""

    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom(p))


def unpack_zip(path: Path, folder: Path, max_bytes: int, name: str) -> list[Path]:
    """Extract the zip archive ``path`` (an upload called ``name``) into ``folder``; the files written, sorted.

    Refused with a one-sentence reason, before anything is written where possible: a member name that is
    absolute or climbs out of the archive (400); more than :data:`MAX_ZIP_MEMBERS` files or more than
    ``max_bytes`` uncompressed (413; counted while extracting too, since a zip's directory can lie); an
    encrypted, unreadable or twice-named member, or no zip at all (422). Links are written as plain files.
    """

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise RequestError(422, f"{name} is not a readable zip archive ({exc.__class__.__name__})") from None
    limit = f"the largest accepted is {max_bytes / 2**20:.0f} MiB uncompressed"
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ZIP_MEMBERS:
            raise RequestError(413, f"{name} holds {len(members)} files; at most {MAX_ZIP_MEMBERS} are accepted")
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise RequestError(413, f"{name} unpacks to {declared / 2**20:.0f} MiB; {limit}")
        targets = [folder.joinpath(*_member_parts(m.filename, name)) for m in members]  # all checked first
        written, total = [], 0
        for member, target in zip(members, targets):
            if member.flag_bits & 0x1:
                raise RequestError(422, f"{name} holds the encrypted file {member.filename[:80]!r}; send it "
                                        "unencrypted")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(target, "xb") as dst:
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise RequestError(413, f"{name} unpacks to more than its directory says; {limit}")
                        dst.write(chunk)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise RequestError(422, f"{name} holds {member.filename[:80]!r} twice (or as a file and a folder)"
                                   ) from None
            except (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError) as exc:
                raise RequestError(422, f"{name}: {member.filename[:80]!r} cannot be unpacked "
                                        f"({exc.__class__.__name__})") from None
            written.append(target)
    return sorted(written)


def _member_parts(filename: str, name: str) -> list[str]:
    """The path components of a zip member; 400 for absolute names and names that climb out (``..``)."""
    raw = filename.replace("\\", "/")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or "\x00" in raw or not parts or ".." in parts:
        raise RequestError(400, f"{name} holds the file name {filename[:80]!r}, which leaves the archive's folder; "
                                "path traversal is not allowed")
    return parts


def _check_size(rows: int, cols: int, name: str, max_side: int) -> None:
    if max(rows, cols) > max_side:
        raise RequestError(413, f"{name} is {rows}×{cols} pixels; the largest side accepted is {max_side}")


def _probe_size(path: Path, fmt: str, max_side: int, name: str) -> None:
    """Refuse an image larger than ``max_side`` from its header, before decoding any pixels (413)."""
    if fmt == "png":
        with open(path, "rb") as fh:
            head = fh.read(24)
        if len(head) == 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            _check_size(height, width, name, max_side)
    elif fmt == "nifti":
        try:
            shape = nib.load(str(path)).shape
        except Exception:
            return  # the reader reports it
        if len(shape) >= 2:
            _check_size(int(shape[1]), int(shape[0]), name, max_side)
    elif fmt == "dicom":
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        except Exception:
            return
        _check_size(rows, cols, name, max_side)
    elif fmt in ("nrrd", "mha"):
        try:
            geometry = read_header(path, fmt).geometry
        except RuntimeError:
            return  # the reader reports it
        if geometry.dimension >= 2:
            _check_size(*geometry.plane_shape(), name, max_side)


def load_input(path: str | os.PathLike, max_side: int, check_model: bool = True,
               scratch: str | os.PathLike | None = None, name: str | None = None) -> InputImage:
    """Read one 2D image (PNG, NIfTI, NRRD, MetaImage, DICOM file, or a folder holding one DICOM image) for
    the model.

    Raises :class:`RequestError`: 415 not an image, 413 too large, 422 unreadable / not 2D / refused by the
    model (a DICOM object that is not a projection radiograph) / an NRRD or MetaImage header naming a
    separate data file (ITK would read any file it names: never given to ITK) — each with a one-sentence
    reason that names the input as ``name`` (the client's name of an upload; default: the file's own name).
    ``scratch``: a folder of this request's own where links with corrected file suffixes may go.
    """
    path = Path(path)
    if path.is_dir():
        files = dicom_files(path)
        if not files:
            raise RequestError(415, f"{name or path.name} holds no DICOM image")
        if len(files) > 1:
            raise RequestError(422, f"the series holds {len(files)} images; this task takes one 2D image "
                                    "(the export task takes whole series)")
        path, name = files[0], None  # a file of the series, named as it is
    shown = name or path.name
    fmt = sniff_format(path)
    if fmt is None:
        raise RequestError(415, f"{shown} is not a {IMAGE_KINDS} image")
    if fmt == "zip":
        raise RequestError(415, f"{shown} {ZIP_REFUSED}")
    if detached_data_file(path, fmt):  # before any ITK read: ITK would open whatever file the header names
        what = FORMAT_NAMES[fmt]
        raise RequestError(422, f"{shown} is a {what} header that does not hold its pixel data itself; only "
                                f"single-file {what} images are accepted ({DETACHED_HINT[fmt]})")
    _probe_size(path, fmt, max_side, shown)
    readable = path
    try:
        if fmt == "dicom":
            return _load_dicom(path, check_model, shown)
        if fmt == "nifti":  # nibabel goes by the name; the other readers by content
            readable = _with_suffix(path, Path(scratch) if scratch else None, shown)
        image = read_image(readable)
    except InputError as exc:  # the readers name files by their path on this server: name it as the client does
        names = sorted({str(readable), str(path), readable.name, path.name} - {shown}, key=len, reverse=True)
        text = re.sub("|".join(map(re.escape, names)), lambda _: shown, str(exc)) if names else str(exc)
        raise RequestError(422, text) from None
    return InputImage(image, image.affine, shown)


def _with_suffix(path: Path, scratch: Path | None, shown: str) -> Path:
    """The NIfTI file ``path`` when its name says so, else a link with the right suffix in ``scratch``
    (nibabel goes by suffix; uploads and session files may arrive with any name)."""
    suffix = nifti_suffix(path)
    name = path.name.lower()
    if name.endswith(suffix) and not (suffix == ".nii" and name.endswith(".nii.gz")):
        return path
    if scratch is None:
        raise RequestError(415, f"{shown} holds a NIfTI image but its name does not say so")
    target = Path(scratch) / f"{path.name.split('.')[0] or 'input'}{suffix}"
    target.unlink(missing_ok=True)
    os.symlink(path.resolve(), target)
    return target


def _load_dicom(path: Path, check_model: bool, shown: str) -> InputImage:
    ds = read_dicom(path)
    if check_model:
        reason = model_refusal(ds)
        if reason:
            raise RequestError(422, f"{shown}: {reason[0].lower()}{reason[1:]}")
    image = image_from_dataset(ds, shown)
    image.meta["affine"] = _dicom_affine(path, image)
    return InputImage(image, image.affine, shown, [path])


def _dicom_affine(path: Path, image: Image2D) -> np.ndarray:
    """The geometry ITK/GDCM (3D Slicer's reader) gives the DICOM image ``path``, as a NIfTI affine; when
    GDCM cannot read the file, or sees another image in it, the origin with the identity direction at the
    pixel spacing pydicom found."""
    try:
        geometry = read_header(path, "dicom").geometry
    except RuntimeError:
        return image.affine
    if geometry.dimension < 2 or geometry.plane_shape() != image.pixels.shape:
        return image.affine
    return geometry.ras_affine()


def write_result(path: str | os.PathLike, source: InputImage, images: list[np.ndarray]) -> Path:
    """Write :func:`nifti_bytes` to ``path`` (atomically)."""
    payload = nifti_bytes(source, images)

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(payload)

    path = Path(path)
    atomic_write(path, _write)
    return path


def nifti_bytes(source: InputImage, images: list[np.ndarray]) -> bytes:
    """``images`` (each ``(H, W)``, in the input's units) as one float32 NIfTI-1 file in ``source``'s
    geometry: a single image keeps the input's NIfTI shape; several become slices ``k = 0, 1, …``.

    Uncompressed (gzip costs more than it saves on float noise). No free text of a NIfTI input is carried
    over: its text fields are emptied and its extensions dropped (:func:`clean_nifti_header`).
    """

    arrays = [np.ascontiguousarray(im, dtype="<f4") for im in images]
    shape = source.image.pixels.shape
    for a in arrays:
        if a.shape != shape:
            raise ValueError(f"result shape {a.shape} differs from the input's {shape}")
    meta = source.image.meta
    if source.image.format == "nifti" and isinstance(meta.get("header"), nib.Nifti1Header):
        header = clean_nifti_header(meta["header"])
        in_shape = tuple(meta["shape"])
    else:
        header = clean_nifti_header()
        header.set_xyzt_units("mm")
        in_shape = (shape[1], shape[0], 1)
    header.set_data_shape(in_shape if len(arrays) == 1 else (shape[1], shape[0], len(arrays)))
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    if source.image.format == "nifti" and int(header["sform_code"]) > 0:
        header.set_sform(source.affine)
    else:
        header.set_sform(source.affine, code=1)
    if source.image.format != "nifti" or int(header["qform_code"]) > 0:
        header.set_qform(source.affine, code=int(header["qform_code"]) or 1)
    header["vox_offset"] = 352
    header["magic"] = b"n+1"
    header = header.as_byteswapped("<") if header.endianness != "<" else header
    # NIfTI stores x (column) fastest: the C-order bytes of each (H, W) image, slice after slice
    return b"".join([header.binaryblock, b"\0\0\0\0", *(a.tobytes() for a in arrays)])
