"""Exporting anonymized studies: a zip of DICOM files, and STOW-RS to a DICOMweb server.

Library functions for the MONAI Label export task::

    export_study_zip(dicom_paths: list[Path], out_zip: Path, options: DeidOptions,
                     pixel_fn: PixelFn | None, change: PixelChange) -> ExportSummary

        Anonymize every file (pixels through ``pixel_fn`` when ``change`` changes them, with the markers
        ``change`` allows; headers through the PS3.15 engine) and write them to ``out_zip`` (atomically)
        as ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` with the *new* UIDs: nothing
        of the input's names. Files the model cannot take are refused and listed, not exported;
        unreadable files are listed as failed; a second file of the same instance is skipped. Raises
        ``InputError`` when nothing could be exported (the reasons are in the message).

    stow_study(files: list[Path], dicomweb_url: str, session: requests.Session | None = None,
               *, batch_size: int = 32) -> StowSummary

        Store DICOM files (or the members of ``.zip`` files) on a DICOMweb server with STOW-RS
        (``dicomweb-client``), one request per study and batch. Raises :class:`StowError` when the
        server rejects anything or cannot be reached.

Both summaries have ``to_dict()`` for JSON replies.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient
from requests import RequestException

from monai_anon_app.dicom.keys import KeyRing
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.outputs import UniqueNames
from monai_anon_app.dicom.pixel_change import PixelChange
from monai_anon_app.dicom.process import PixelFn, process_dicom
from monai_anon_app.errors import InputError
from monai_anon_app.imageio.images import atomic_write
from monai_anon_app.runner import process_files

__all__ = ["ExportSummary", "StowError", "StowSummary", "export_study_zip", "stow_study"]


@dataclass
class ExportSummary:
    out_zip: str | None
    files: list[str] = field(default_factory=list)  # member names in the zip
    study_uids: list[str] = field(default_factory=list)  # new Study Instance UIDs
    refused: list[tuple[str, str]] = field(default_factory=list)  # (input name, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.files)

    def to_dict(self) -> dict:
        return {**asdict(self), "done": self.done}


@dataclass
class StowSummary:
    url: str
    stored: list[str] = field(default_factory=list)  # SOP Instance UIDs the server accepted
    study_uids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class StowError(RuntimeError):
    """The DICOMweb server could not be reached or rejected instances (one-line message)."""


def export_study_zip(dicom_paths: list[Path], out_zip: Path, options: DeidOptions, pixel_fn: PixelFn | None,
                     change: PixelChange) -> ExportSummary:
    """Anonymize ``dicom_paths`` into the zip ``out_zip`` (see the module docstring)."""
    out_zip = Path(out_zip)
    summary = ExportSummary(str(out_zip))
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_zip.parent) as tmp:
        names = UniqueNames(Path(tmp), KeyRing(options.key))
        done = process_files([(src.name, src) for src in map(Path, dicom_paths)],
                             lambda src: process_dicom(src, names.instance, options, pixel_fn, change)[0],
                             desc="export", progress=False)
        summary.refused, summary.skipped, summary.failed = done.refused, done.skipped, done.failed
        members = [(dst.relative_to(tmp).as_posix(), dst) for _, dst in done.results]
        for name, _ in members:
            study = name.split("/")[0]
            if study not in summary.study_uids:
                summary.study_uids.append(study)
        if not members:
            reasons = "; ".join(f"{n}: {r}" for n, r in summary.refused + summary.failed + summary.skipped)
            raise InputError(f"nothing to export ({reasons or 'no input files'})")

        def _write(path: str) -> None:
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, file in sorted(members):
                    zf.write(file, name)

        atomic_write(out_zip, _write)
        summary.files = sorted(name for name, _ in members)
    return summary


def _datasets(files: list[Path]):
    for f in map(Path, files):
        if f.suffix.lower() == ".zip":
            with zipfile.ZipFile(f) as zf:
                for name in sorted(zf.namelist()):
                    if not name.endswith("/"):
                        yield pydicom.dcmread(io.BytesIO(zf.read(name)))
        else:
            yield pydicom.dcmread(str(f))


def stow_study(files: list[Path], dicomweb_url: str, session=None, *, batch_size: int = 32) -> StowSummary:
    """STOW-RS ``files`` to ``dicomweb_url`` (see the module docstring)."""

    client = DICOMwebClient(url=dicomweb_url.rstrip("/"), session=session)
    summary = StowSummary(dicomweb_url)
    by_study: dict[str, list] = {}
    for ds in _datasets(files):
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    for study, datasets in by_study.items():
        for start in range(0, len(datasets), batch_size):
            chunk = datasets[start:start + batch_size]
            try:
                reply = client.store_instances(chunk, study_instance_uid=study)
            except (RequestException, OSError) as exc:
                raise StowError(f"STOW-RS to {dicomweb_url} failed: {' '.join(str(exc).split())[:200]}") from None
            failed = reply.get("FailedSOPSequence") or []
            if failed:
                reasons = {str(item.get("FailureReason", "?")) for item in failed}
                raise StowError(f"the server rejected {len(failed)} of {len(chunk)} instances of study {study} "
                                f"(failure reason {', '.join(sorted(reasons))})")
            accepted = {str(i.ReferencedSOPInstanceUID) for i in (reply.get("ReferencedSOPSequence") or [])}
            sent = [str(ds.SOPInstanceUID) for ds in chunk]
            missing = [uid for uid in sent if accepted and uid not in accepted]
            if missing:
                raise StowError(f"the server did not confirm {len(missing)} of {len(chunk)} instances of study {study}")
            summary.stored += sent
        summary.study_uids.append(study)
    return summary
