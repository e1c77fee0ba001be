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
from monai_anon_app.dicom.outputs import DUPLICATE_LABEL, DUPLICATE_MESSAGE, OutputLayout, remove_partial_files
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

__all__ = ["FileJob", "FileResult", "append_mapping_of", "run_files", "without_duplicates"]

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
    #: hand the de-identification record back (it holds the original identifiers): only for a mapping file
    return_records: bool = False

    def layout(self) -> OutputLayout:
        return OutputLayout(self.src, self.dst, self.options.key, keep_names=self.keep_names)

    def fingerprint(self) -> str:
        """Every argument that changes an output (the key excepted), for the resume journal."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("options", "return_records")}
        fields["options"] = {name: getattr(self.options, name) for name in OPTIONS}
        return json.dumps(fields, sort_keys=True, default=str)

    def without_mapping(self) -> FileJob:
        """This job for Dask workers: no mapping file (the client writes its rows from the records the workers
        hand back, and only then do they hand them back)."""
        return dataclasses.replace(self, options=dataclasses.replace(self.options, mapping_file=None),
                                   return_records=self.options.mapping_file is not None)

    def result(self, src: Path, out: Path, record: DeidRecord | None) -> FileResult:
        return src, out, record if self.return_records else None

    def handler(self) -> Callable[[Path], FileResult]:
        """The function that de-identifies one input file of this job (headers only)."""
        layout, options = self.layout(), self.options

        def deidentify(src: Path) -> FileResult:
            if not is_dicom(src):
                raise Skipped(f"{src.name} is not a DICOM file", "not DICOM")
            return self.result(src, *process_dicom(src, layout.dicom(src), options, None, KEPT))

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
    remove_partial_files(job.dst)  # left by an earlier run that was killed
    journal = Journal(job.dst, job.options.key, job.fingerprint())
    summary = process_files_on_dask(pairs, job.without_mapping().handler, cluster, desc=job.command,
                                    progress=progress, refuse=refuse, fatal=fatal, journal=journal,
                                    on_done=append_mapping_of(job.options.mapping_file))
    remove_partial_files(job.dst)  # left by a worker killed while writing (its file was written again elsewhere)
    return without_duplicates(summary)


def without_duplicates(summary: Summary) -> Summary:
    """Files whose output path an earlier input (in input order) already produced, counted as skipped
    duplicates, as one process counts them: workers cannot see each other's output names."""
    out: Summary = Summary(refused=summary.refused, skipped=list(summary.skipped), failed=summary.failed,
                           skip_labels=summary.skip_labels.copy())
    seen: set[Path] = set()
    for name, result in summary.results:
        if result is not None and result[1] in seen:
            out.add(name, Outcome("skipped", DUPLICATE_MESSAGE, DUPLICATE_LABEL))
            continue
        if result is not None:
            seen.add(result[1])
        out.results.append((name, result))
    return out
