"""``monai-anon phantoms``: write a deterministic phantom cohort."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantoms", help="write a phantom cohort (PNG, NIfTI or DICOM) with labels.csv",
                       description="Write a deterministic chest-radiograph-like phantom cohort and labels.csv "
                                   "(file,patient_id,finding,…).")
    p.add_argument("out", help="output folder")
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--images-per-patient", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="cohort seed; different seeds share no patients")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--format", choices=("png", "nifti", "dicom"), default="png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .phantoms import Cohort
    from .writer import write_cohort

    if args.size < 16:
        raise ValueError("--size must be at least 16 pixels")
    cohort = Cohort(args.patients, args.images_per_patient, seed=args.seed)
    labels = write_cohort(args.out, cohort, args.size, args.format, progress=not args.no_progress)
    print(f"wrote {len(cohort)} images of {cohort.patients} patients; labels in {labels}")
    return 0
