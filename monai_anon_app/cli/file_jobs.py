"""What a batch command does to one file, as a plain value that another process (a Dask worker) can rebuild:
:meth:`FileJob.handler` makes the per-file function (``deid`` here; ``anonymize`` and ``counterfactual`` in
:class:`monai_anon_app.cli.anonymize.ModelJob`). A handler returns ``(input, output, de-identification
record or None)``. Torch-free, so that ``monai-anon deid`` never loads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monai_anon_app.dicom.deidentifier import DeidRecord
from monai_anon_app.dicom.files import is_dicom
from monai_anon_app.dicom.mapping import append_mapping
from monai_anon_app.dicom.options import OPTIONS, DeidOptions
from monai_anon_app.dicom.outputs import OutputLayout
from monai_anon_app.dicom.pixel_change import KEPT
from monai_anon_app.dicom.process import process_dicom
from monai_anon_app.runner import (
    Journal,
    Outcome,
    Skipped,
    Summary,
    process_files,
)
from monai_anon_app.runner.cluster import ClusterOptions, process_files_on_dask

__all__ = ["FileJob", "FileResult", "append_mapping_of", "run_files"]

#: input, output and (DICOM) the de-identification record
FileResult = tuple[Path, Path, DeidRecord | None]


@dataclass(frozen=True)
class FileJob:
    """One batch command's work on each file of ``src`` into ``dst`` (see the module docstring)."""

    command: str  # deid here; anonymize and counterfactual in monai_anon_app.cli.anonymize.ModelJob
    src: Path
    dst: Path
    options: DeidOptions
    keep_names: bool = False

    def layout(self) -> OutputLayout:
        return OutputLayout(self.src, self.dst, self.options.key, keep_names=self.keep_names)

    def fingerprint(self) -> str:
        """Every argument that changes an output (the key excepted), for the resume journal."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        fields["options"] = {name: getattr(self.options, name) for name in OPTIONS}
        return json.dumps(fields, sort_keys=True, default=str)

    def without_mapping(self) -> FileJob:
        """This job with no mapping file: on a Dask worker, the client writes the mapping rows."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, mapping_file=None))

    def handler(self) -> Callable[[Path], FileResult]:
        """The function that de-identifies one input file of this job (headers only)."""
        layout, options = self.layout(), self.options

        def deidentify(src: Path) -> FileResult:
            if not is_dicom(src):
                raise Skipped(f"{src.name} is not a DICOM file", "not DICOM")
            return (src, *process_dicom(src, layout.dicom(src), options, None, KEPT))

        return deidentify


def append_mapping_of(mapping_file: Path | None) -> Callable[[Path, Outcome], None] | None:
    """For a Dask run: the function that appends each done file's mapping row here, in the client."""
    if mapping_file is None:
        return None

    def append(path: Path, outcome: Outcome) -> None:
        if outcome.kind == "done":
            src, out, record = outcome.value
            append_mapping(mapping_file, src, out, record)

    return append


def run_files(job: FileJob, inputs: list[Path], *, progress: bool = True, refuse: tuple[type[BaseException], ...] = (),
              fatal: tuple[type[BaseException], ...] = (), cluster: ClusterOptions | None = None) -> Summary:
    """Run ``job`` on ``inputs``: in this process, or on a Dask cluster with a resume journal in the output
    folder (a single input file always runs here)."""
    pairs = [(str(p), p) for p in inputs]
    if cluster is None or job.layout().single:
        return process_files(pairs, job.handler(), desc=job.command, progress=progress, refuse=refuse, fatal=fatal)
    journal = Journal(job.dst, job.options.key, job.fingerprint())
    return process_files_on_dask(pairs, job.without_mapping().handler, cluster, desc=job.command, progress=progress,
                                 refuse=refuse, fatal=fatal, journal=journal,
                                 on_done=append_mapping_of(job.options.mapping_file))
