"""The optional mapping file: the one output that links de-identified files back to their originals.

Written only when the user asks (``--mapping-file``); rows are appended (CSV, one per file) under an
exclusive lock, so several batches or processes can share one file. Keep it as secret as the key.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from pathlib import Path

from monai_anon_app.dicom.deidentifier import DeidRecord

__all__ = ["COLUMNS", "append_mapping"]

COLUMNS = ("source", "output", "patient_id", "pseudonym", "date_offset_days", "study_uid", "new_study_uid",
           "series_uid", "new_series_uid", "sop_uid", "new_sop_uid")


def append_mapping(path: str | os.PathLike, source: Path, output: Path, record: DeidRecord | None = None) -> None:
    """Append one row for ``source`` → ``output`` to the CSV at ``path`` (header on first write); without a
    ``record`` (PNG, NIfTI: no header identifiers) only the two paths are filled in."""
    row: list = [str(source), str(output)]
    if record is None:
        row += [""] * (len(COLUMNS) - 2)
    else:
        row += [record.patient_id, record.pseudonym, "" if record.date_offset_days is None else record.date_offset_days]
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            row += list(record.uids.get(key, ("", "")))
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", newline="") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if fh.tell() == 0 and os.fstat(fh.fileno()).st_size == 0:
                csv.writer(fh).writerow(COLUMNS)
            fh.write(buf.getvalue())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
