"""Images in and out of the infer tasks: one 2D image from a file or a DICOM series folder, and float
NIfTI results in the input's geometry and intensity units.

Input geometry becomes a NIfTI (RAS) affine for the axes ``(i, j, k) = (column, row, slice)``:

* NIfTI input: its own affine and header, unchanged;
* DICOM input: what ITK/GDCM (and so 3D Slicer) derive from the file: Image Position/Orientation
  (Patient) when present, else the origin and the identity LPS direction; Imager Pixel Spacing first
  for CR/DX (as GDCM does), else Pixel Spacing;
* PNG input: 1 mm pixels, identity LPS direction.

Intensities are the input's own units: for DICOM the modality rescale applied and MONOCHROME1 shown
bright-is-dense (``lo + hi - v`` over the stored range), which is again what ITK/GDCM load.
"""

from __future__ import annotations

import gzip
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
from monai_anon_app.dicom.pixels import PROJECTION_CLASSES, image_from_dataset, model_refusal
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.images import Image2D, atomic_write, read_image
from monai_anon_app.imageio.metadata import clean_nifti_header
from monai_anon_app.server.request_errors import RequestError

__all__ = ["UPLOAD_NAME", "ZIP_REFUSED", "InputImage", "check_id", "client_name", "dicom_files", "load_input",
           "nifti_bytes", "probe_format", "unpack_zip", "write_result"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or the end record of an empty archive
SUFFIX = {"png": ".png", "nifti": ".nii.gz", "dicom": ".dcm", "zip": ".zip"}
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


def probe_format(path: str | os.PathLike) -> str | None:
    """``"png"``, ``"nifti"``, ``"dicom"``, ``"zip"`` or ``None`` from the file's first bytes (names are not
    trusted)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
    except OSError:
        return None
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(352)
        except (OSError, EOFError):
            return None
    if _is_nifti_header(head):
        return "nifti"
    if len(head) >= 8 and head[:2] != b"\x1f\x8b":  # a DICOM data set written without the Part 10 preamble
        for order in ("<", ">"):
            group, element = struct.unpack(order + "HH", head[:4])
            explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
            short = struct.unpack(order + "I", head[4:8])[0] < 4096
            if group in (0x0002, 0x0008) and element < 0x0100 and (explicit_vr or short):
                return "dicom"
    return None


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


def load_input(path: str | os.PathLike, max_side: int, check_model: bool = True,
               scratch: str | os.PathLike | None = None, name: str | None = None) -> InputImage:
    """Read one 2D image (PNG, NIfTI, DICOM file, or a folder holding one DICOM image) for the model.

    Raises :class:`RequestError`: 415 not an image, 413 too large, 422 unreadable / not 2D / refused by the
    model (a DICOM object that is not a projection radiograph) — each with a one-sentence reason that
    names the input as ``name`` (the client's name of an upload; default: the file's own name).
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
    fmt = probe_format(path)
    if fmt is None:
        raise RequestError(415, f"{shown} is not a PNG, NIfTI or DICOM image")
    if fmt == "zip":
        raise RequestError(415, f"{shown} {ZIP_REFUSED}")
    _probe_size(path, fmt, max_side, shown)
    readable = path
    try:
        if fmt == "dicom":
            return _load_dicom(path, check_model, shown)
        readable = _with_suffix(path, fmt, Path(scratch) if scratch else None, shown)
        image = read_image(readable)
    except InputError as exc:  # the readers name files by their path on this server: name it as the client does
        names = sorted({str(readable), str(path), readable.name, path.name} - {shown}, key=len, reverse=True)
        text = re.sub("|".join(map(re.escape, names)), lambda _: shown, str(exc)) if names else str(exc)
        raise RequestError(422, text) from None
    if fmt == "nifti":
        affine = np.asarray(image.meta["affine"], dtype=np.float64)
    else:
        affine = _lps_affine(image.spacing, None, None)
    return InputImage(image, affine, shown)


def _with_suffix(path: Path, fmt: str, scratch: Path | None, shown: str) -> Path:
    """``path`` when its name matches its content, else a link with the right suffix in ``scratch``
    (the readers go by suffix; uploads and session files may arrive with any name)."""
    if fmt == "png":
        suffix = ".png"
    else:
        with open(path, "rb") as fh:
            suffix = ".nii.gz" if fh.read(2) == b"\x1f\x8b" else ".nii"
    name = path.name.lower()
    if name.endswith(suffix) and not (suffix == ".nii" and name.endswith(".nii.gz")):
        return path
    if scratch is None:
        raise RequestError(415, f"{shown} holds a {fmt.upper()} image but its name does not say so")
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
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    affine = _lps_affine(_dicom_spacing(ds, image.spacing), ipp, iop)
    return InputImage(image, affine, shown, [path])


def _dicom_spacing(ds, fallback: tuple[float, float]) -> tuple[float, float]:
    """(row, column) spacing in mm as GDCM chooses it: Imager Pixel Spacing for projection radiographs."""

    names = ("ImagerPixelSpacing", "PixelSpacing")
    if str(ds.get("SOPClassUID", "")) not in PROJECTION_CLASSES:
        names = names[::-1]
    for name in names:
        value = ds.get(name)
        try:
            if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
                return float(value[0]), float(value[1])
        except (TypeError, ValueError):
            continue
    return fallback


def _lps_affine(spacing: tuple[float, float], position, orientation) -> np.ndarray:
    """NIfTI (RAS) affine for ``(column, row, slice)`` from DICOM-style LPS position/orientation."""
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    along_row, along_col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    if orientation is not None and len(orientation) == 6:
        cosines = np.asarray([float(v) for v in orientation])
        if np.all(np.isfinite(cosines)) and np.linalg.norm(np.cross(cosines[:3], cosines[3:])) > 0.5:
            along_row, along_col = cosines[:3], cosines[3:]
    origin = np.zeros(3)
    if position is not None and len(position) == 3:
        origin = np.asarray([float(v) for v in position])
    normal = np.cross(along_row, along_col)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = along_row * col_mm, along_col * row_mm, normal, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


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
