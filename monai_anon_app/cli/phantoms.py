"""``monai-anon phantoms``: write a deterministic phantom cohort."""

from __future__ import annotations

import argparse

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.phantoms import Cohort


def run(args: argparse.Namespace) -> int:
    if args.size < 16:
        raise ValueError("--size must be at least 16 pixels")
    cohort = Cohort(args.patients, args.images_per_patient, seed=args.seed)
    labels = write_cohort(args.out, cohort, args.size, args.format, progress=not args.no_progress)
    print(f"wrote {len(cohort)} images of {cohort.patients} patients; labels in {labels}")
    return 0
