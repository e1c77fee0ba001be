"""``monai-anon anonymize`` and ``monai-anon counterfactual``: files and folders of DICOM, NIfTI and PNG.

See :data:`~monai_anon_app.cli.parsers.ANONYMIZE_DESCRIPTION` for what OUTPUT holds; the batch runs through
:func:`~monai_anon_app.runner.process_files`.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import numpy as np

from monai_anon_app.cli.deid import layout_from_args, options_from_args, print_outcomes
from monai_anon_app.data.sample import sample_study
from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES
from monai_anon_app.dicom.mapping import append_mapping
from monai_anon_app.dicom.options import DeidOptions
from monai_anon_app.dicom.outputs import OutputLayout
from monai_anon_app.dicom.pixel_change import of_command
from monai_anon_app.dicom.process import process_dicom
from monai_anon_app.errors import InputError, ModelError
from monai_anon_app.imageio.images import image_format, read_image, write_image
from monai_anon_app.inference import Anonymizer, seed_for
from monai_anon_app.modelfolder.registry import resolve_model
from monai_anon_app.runner import Refused, Skipped, Summary, process_files

__all__ = ["run", "run_batch"]


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    if getattr(args, "sample", False):
        if len(args.paths) != 1:
            raise InputError("with --sample give only OUTPUT")
        return sample_study(), Path(args.paths[0])
    if len(args.paths) != 2:
        raise InputError("give INPUT and OUTPUT")
    return Path(args.paths[0]), Path(args.paths[1])


def run(args: argparse.Namespace) -> int:
    src, dst = _paths(args)
    options = options_from_args(args)
    anonymize = args.command == "anonymize"
    seed = args.seed if anonymize and args.seed is not None else secrets.randbelow(2**31)
    layout = layout_from_args(args, src, dst, options)
    summary = run_batch(layout, args.command, options, model=args.model, seed=seed,
                        candidates=getattr(args, "candidates", CANDIDATES), mode=args.mode,
                        target=getattr(args, "target", None), headers_only=getattr(args, "headers_only", False),
                        progress=not args.no_progress)
    print_outcomes(summary, layout)
    print(summary.line(args.command) + (f"; seed {seed}" if anonymize else ""))
    return 0 if summary.ok else 1


def run_batch(layout: OutputLayout, command: str, options: DeidOptions, model: str | None = None, seed: int = 0,
              candidates: int = CANDIDATES, mode: str = ANONYMIZE_MODE, target: str | None = None,
              headers_only: bool = False, progress: bool = True) -> Summary:
    """Process every file of ``layout`` (the inputs and where each output goes) with ``command``
    (``anonymize`` or ``counterfactual``); see the module docstring."""
    src = layout.src
    inputs = layout.inputs()
    if not inputs:
        raise InputError(f"{src} holds no files")
    if src.is_file() and image_format(src) is None:
        raise InputError(f"{src.name} is not a PNG, NIfTI or DICOM image")
    loaded: list[Anonymizer] = []

    def anonymizer() -> Anonymizer:  # loaded on first use: headers-only runs need no model
        if not loaded:
            loaded.append(Anonymizer.load(resolve_model(model)))
            if target is not None and target not in loaded[0].classes:
                raise InputError(f"unknown class {target!r}; the model knows {', '.join(loaded[0].classes)}")
        return loaded[0]

    def pixel_fn(pixels: np.ndarray, key: str | None) -> np.ndarray:
        a = anonymizer()
        if command == "anonymize":
            return a.anonymize(pixels, seed=seed_for(seed, key), candidates=candidates, mode=mode).image
        return a.counterfactual(pixels, target=target, mode=mode).image

    change = of_command(command, mode, target, headers_only)

    def handle(path: Path) -> Path:
        fmt = image_format(path)
        if fmt is None:
            raise Skipped(f"{path.name} is not an image", "not an image")
        if fmt == "dicom":
            return process_dicom(path, layout.dicom(path), options, None if headers_only else pixel_fn, change)[0]
        if headers_only:
            raise Refused(f"--headers-only applies to DICOM; a {fmt.upper()} file has no header to clean "
                          "and its pixels would be kept")
        image = read_image(path)
        out = layout.image(path)
        write_image(out, pixel_fn(image.pixels, None), image)
        if options.mapping_file is not None:
            append_mapping(options.mapping_file, path, out)
        return out

    summary = process_files([(str(p), p) for p in inputs], handle, desc=command, progress=progress,
                            refuse=(InputError,), fatal=(ModelError,))
    if not summary.done and not summary.refused and not summary.failed:
        raise InputError(f"{src} holds no PNG, NIfTI or DICOM images")
    return summary
