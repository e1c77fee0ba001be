"""Helpers without Qt or MRML: pseudonyms, difference maps, result summaries, export plans, zip handling."""

from __future__ import annotations

import io
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ServerFailedError

__all__ = [
    "ExportPlan",
    "dicom_upload",
    "dicom_zip_upload",
    "difference_window",
    "extract_zip",
    "format_prediction",
    "new_pseudonym",
    "new_seed",
    "summarize",
]


def new_seed() -> int:
    """A fresh identity seed (31 bits, so every server and JSON reader takes it)."""
    return secrets.randbelow(2**31 - 1) + 1


def new_pseudonym() -> str:
    """A short random pseudonym for a new anonymized patient (never derived from the original)."""
    return secrets.token_hex(4).upper()


def difference_window(diff: np.ndarray) -> tuple[float, float]:
    """``(window, level)`` that shows a difference map symmetrically around zero."""
    finite = np.abs(diff[np.isfinite(diff)]) if diff.size else np.zeros(1)
    peak = float(np.percentile(finite, 99.5)) if finite.size else 0.0
    if peak <= 0.0:
        peak = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return 2.0 * peak, 0.0


def format_prediction(pred: dict[str, Any] | None) -> str:
    """``effusion (81 %)`` from ``{"label": ..., "probabilities": {...}}``."""
    if not pred:
        return "?"
    label = str(pred.get("label", "?"))
    probs = pred.get("probabilities") or {}
    if isinstance(probs, dict) and label in probs:
        return f"{label} ({100.0 * float(probs[label]):.0f} %)"
    return label


def _probabilities(pred: dict[str, Any] | None) -> str:
    probs = (pred or {}).get("probabilities") or {}
    if not isinstance(probs, dict) or not probs:
        return ""
    ordered = sorted(probs.items(), key=lambda kv: -float(kv[1]))
    return ", ".join(f"{k} {100.0 * float(v):.0f} %" for k, v in ordered)


def summarize(operation: str, details: dict[str, Any]) -> str:
    """A few lines for the panel from a result's JSON details."""
    lines: list[str] = []
    if operation == "anonymize":
        line = f"Synthetic identity seed: {details.get('seed', '?')}"
        if details.get("identity_seed") not in (None, details.get("seed")):
            line += f" (for this patient: {details['identity_seed']})"
        lines.append(line)
        if "identity_distance" in details:
            line = f"Distance to the nearest training identity: {float(details['identity_distance']):.3g}"
            if "source_identity_distance" in details:
                line += f" (original: {float(details['source_identity_distance']):.3g})"
            lines.append(line)
        lines.append(f"Prediction before: {format_prediction(details.get('prediction_before'))}; "
                     f"after: {format_prediction(details.get('prediction_after'))}")
    elif operation == "counterfactual":
        lines.append(f"Target: {details.get('target', '?')}")
        lines.append(f"Prediction before: {format_prediction(details.get('prediction_before'))}; "
                     f"after: {format_prediction(details.get('prediction_after'))}")
    elif operation == "explain":
        pred = details.get("prediction")
        lines.append(f"Predicted finding: {format_prediction(pred)}")
        probs = _probabilities(pred)
        if probs:
            lines.append(f"Probabilities: {probs}")
        cases = details.get("cases") or []
        for i, case in enumerate(cases, start=1):
            distance = float(case.get("distance", float("nan")))
            lines.append(f"Case {i}: {case.get('finding', '?')}, distance {distance:.3g}")
    elif operation == "export":
        summary = details.get("summary") or details
        done = summary.get("done", len(details.get("files") or []))
        refused = summary.get("refused") or []
        failed = summary.get("failed") or []
        lines.append(f"Exported {done} file(s); refused {len(refused)}; failed {len(failed)}.")
        stow = details.get("stow")
        if isinstance(stow, dict):
            lines.append(f"PACS: stored {len(stow.get('stored') or [])} file(s)." if stow.get("ok", True)
                         else f"PACS: not stored: {stow.get('error') or 'no reason given'}")
        for entry in [*refused, *failed][:5]:
            if isinstance(entry, dict):
                name, reason = entry.get("file", "?"), entry.get("reason", "")
            else:
                name, reason = entry
            lines.append(f"  {Path(str(name)).name}: {reason}")
    if details.get("model_checksum"):
        lines.append(f"Model checksum: {str(details['model_checksum'])[:16]}")
    return "\n".join(lines)


@dataclass
class ExportPlan:
    """What an export will send and write; shown to the user for confirmation before anything happens."""

    server: str
    source_files: list[str]
    seed: int | None
    seed_from_preview: bool
    headers_only: bool
    options: dict[str, bool]
    folder: str | None  # None: no folder export
    to_database: bool
    to_pacs: bool
    staging_folder: str | None = None  # temporary folder when only the database receives the files
    warnings: list[str] = field(default_factory=list)
    candidates: int = 8
    mode: str = "full"
    #: the preview was made from the DICOM file (so the server knew the patient): the export repeats it exactly
    matches_preview: bool = False

    def params(self) -> dict[str, Any]:
        """The ``params`` of the server's ``export`` task (the preview's seed, candidates and mode, so that
        the server draws the identity the preview showed)."""
        params: dict[str, Any] = {"headers_only": self.headers_only, "stow": self.to_pacs}
        if not self.headers_only:
            params.update(candidates=self.candidates, mode=self.mode)
            if self.seed is not None:
                params["seed"] = self.seed
        params.update({k: v for k, v in self.options.items() if v})
        return params

    def describe(self) -> str:
        """Plain-language confirmation text: what is sent where and what is written where."""
        n = len(self.source_files)
        lines = [f"{n} DICOM file(s) of the input series will be sent to {self.server} in one request and "
                 "anonymized there:"]
        if self.headers_only:
            lines.append("  - headers de-identified; pixels kept as they are (burned-in text is not removed)")
        elif self.matches_preview:
            lines.append(f"  - pixels get the synthetic identity of the preview (seed {self.seed}): the exported "
                         "image is the anonymized image you saw, and every image of the patient gets that identity")
        elif self.seed_from_preview:
            lines.append(f"  - pixels get a synthetic identity drawn from the preview's seed ({self.seed}), one per "
                         "patient; the preview was made without the image's DICOM header, so the exported image "
                         "differs from it")
        else:
            lines.append(f"  - pixels get a synthetic identity drawn from a new seed ({self.seed}), one per patient; "
                         "there is no preview of this image to compare with")
        kept = [k.replace("_", " ") for k, v in self.options.items() if v]
        lines.append("  - de-identification options: " + (", ".join(kept) if kept else "none (basic profile)"))
        lines.append("The anonymized study will be written:")
        if self.folder:
            lines.append(f"  - as DICOM files into the folder {self.folder}")
        if self.to_database:
            lines.append("  - into Slicer's DICOM database")
        if self.to_pacs:
            lines.append("  - to the PACS connected to the server (DICOMweb STOW-RS)")
        lines.extend(f"Note: {w}" for w in self.warnings)
        return "\n".join(lines)


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
