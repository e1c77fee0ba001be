"""Batches of files: one loop in this process (:func:`process_files`), the same :class:`Summary` on a Dask
cluster (:mod:`monai_anon_app.runner.cluster`, imported on its own: it loads ``distributed``), and a journal
that lets an interrupted run resume. Torch-free."""

from monai_anon_app.runner.journal import Journal
from monai_anon_app.runner.loop import (
    Outcome,
    Refused,
    Skipped,
    Summary,
    describe_failure,
    outcome_of,
    process_files,
)

__all__ = ["Journal", "Outcome", "Refused", "Skipped", "Summary", "describe_failure", "outcome_of", "process_files"]
