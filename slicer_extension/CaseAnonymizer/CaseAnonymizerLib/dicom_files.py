"""DICOM files to and from the server: one file or a zip of a series as an upload, the export's zip unpacked."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from .errors import ServerFailedError

__all__ = ["dicom_upload", "dicom_zip_upload", "extract_zip"]


def _dicom_name(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    return p.name if p.suffix.lower() == ".dcm" else p.name + ".dcm"


def dicom_upload(path: str | os.PathLike[str]) -> tuple[str, bytes, str]:
    """``(filename, data, content type)`` to upload one DICOM file."""
    return _dicom_name(path), Path(path).read_bytes(), "application/dicom"


def dicom_zip_upload(paths: list[str], name: str = "series.zip") -> tuple[str, bytes, str]:
    """``(filename, data, content type)`` of a zip holding the DICOM files ``paths`` (a series or study goes to
    the server's export in one request, so that one de-identification pass covers all of it). Files with
    the same name get a number in front."""
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i, path in enumerate(paths):
            member = _dicom_name(path)
            if member in used:
                member = f"{i:05d}-{member}"
            used.add(member)
            zf.write(path, member)
    return name, buffer.getvalue(), "application/zip"


def extract_zip(data: bytes, folder: str | os.PathLike[str]) -> list[Path]:
    """Write the members of a zip into ``folder``, refusing any member that would land outside it."""
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ServerFailedError("The server's export is not a valid zip file.", 200, "", str(exc)) from exc
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = (root / info.filename).resolve()
            if root not in target.parents:
                raise ServerFailedError(f"The server's export holds an unsafe file name ({info.filename!r}).",
                                        200, "", info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                dst.write(src.read())
            written.append(target)
    return written
