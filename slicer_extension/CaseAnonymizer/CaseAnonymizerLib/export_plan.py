"""The export plan: what an export sends to the server and writes where, confirmed by the user first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExportPlan"]


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
