"""``monai-anon anonymize`` and ``monai-anon counterfactual``: files and folders of DICOM, NIfTI, PNG, NRRD
and MetaImage.

See :data:`~monai_anon_app.cli.parsers.ANONYMIZE_DESCRIPTION` for what OUTPUT holds. The batch runs in this
process or on Dask (:func:`~monai_anon_app.cli.file_jobs.run_files`), each file through :class:`ModelJob`.
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from monai_anon_app.cli.deid import cluster_from_args, layout_from_args, options_from_args, print_outcomes
from monai_anon_app.cli.file_jobs import FileJob, FileResult, run_files
from monai_anon_app.data.sample import sample_study
from monai_anon_app.defaults import ANONYMIZE_MODE, CANDIDATES
from monai_anon_app.dicom.mapping import append_mapping
from monai_anon_app.dicom.pixel_change import of_command
from monai_anon_app.dicom.process import process_dicom
from monai_anon_app.errors import InputError, ModelError
from monai_anon_app.imageio.formats import IMAGE_KINDS
from monai_anon_app.imageio.images import image_format, read_image, write_image
from monai_anon_app.inference import Anonymizer, seed_for
from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.modelfolder.folder import checksum, is_complete, require_complete
from monai_anon_app.modelfolder.registry import resolve_model
from monai_anon_app.runner import Refused, Skipped, Summary
from monai_anon_app.runner.cluster import ClusterOptions

__all__ = ["BATCH_TORCH_THREADS", "ModelJob", "run", "run_batch"]

#: torch threads of each batch process (this one, or each Dask worker): the same pixels whatever the parallelism
BATCH_TORCH_THREADS = 1


@dataclass(frozen=True)
class ModelJob(FileJob):
    """``anonymize`` or ``counterfactual`` on each file: pixels through the model (loaded on first use, once
    per process), DICOM headers through the de-identifier."""

    model: str | None = None
    seed: int = 0  # anonymize: the base seed of the synthetic identities (unused otherwise)
    candidates: int = CANDIDATES
    mode: str = ANONYMIZE_MODE
    target: str | None = None
    headers_only: bool = False

    def fingerprint(self) -> str:
        folder = resolve_model(self.model)
        weights = "" if self.headers_only or not is_complete(folder) else checksum(folder)
        return super().fingerprint() + weights

    def handler(self) -> Callable[[Path], FileResult]:
        # one torch thread per process: a float sum's order depends on the thread count, so pixels would
        # differ (by one unit, in a few pixels) between a run in one process and one on Dask workers
        torch.set_num_threads(BATCH_TORCH_THREADS)
        layout, options = self.layout(), self.options
        loaded: list[Anonymizer] = []

        def anonymizer() -> Anonymizer:  # loaded on first use: headers-only runs need no model
            if not loaded:
                loaded.append(Anonymizer.load(resolve_model(self.model)))  # the target was checked by run()
            return loaded[0]

        def pixel_fn(pixels: np.ndarray, key: str | None) -> np.ndarray:
            a = anonymizer()
            if self.command == "anonymize":
                return a.anonymize(pixels, seed=seed_for(self.seed, key), candidates=self.candidates,
                                   mode=self.mode).image
            return a.counterfactual(pixels, target=self.target, mode=self.mode).image

        change = of_command(self.command, self.mode, self.target, self.headers_only)

        def handle(path: Path) -> FileResult:
            fmt = image_format(path)
            if fmt is None:
                raise Skipped(f"{path.name} is not an image", "not an image")
            if fmt == "dicom":
                return self.result(path, *process_dicom(path, layout.dicom(path), options,
                                                        None if self.headers_only else pixel_fn, change))
            if self.headers_only:
                raise Refused(f"--headers-only applies to DICOM; a {fmt.upper()} file has no header to clean "
                              "and its pixels would be kept")
            image = read_image(path)
            out = layout.image(path)
            write_image(out, pixel_fn(image.pixels, None), image)
            if options.mapping_file is not None:
                append_mapping(options.mapping_file, path, out)
            return self.result(path, out, None)

        return handle


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
    headers_only = getattr(args, "headers_only", False)
    draws_identities = anonymize and not headers_only
    given = getattr(args, "seed", None)
    seed = given if given is not None and anonymize else secrets.randbelow(2**31) if draws_identities else 0
    layout = layout_from_args(args, src, dst, options)
    cluster = cluster_from_args(args)
    model = args.model
    if cluster is not None:  # workers resolve nothing against their own working folder or models
        src, dst = src.resolve(), dst.resolve()
        model = None if headers_only else str(resolve_model(model).resolve())
    target = getattr(args, "target", None)
    if target is not None:
        check_target(model, target)
    job = ModelJob(args.command, src, dst, options, keep_names=layout.keep_names, model=model, seed=seed,
                   candidates=getattr(args, "candidates", CANDIDATES), mode=args.mode, target=target,
                   headers_only=headers_only)
    summary = run_batch(job, progress=not args.no_progress, cluster=cluster)
    print_outcomes(summary, layout)
    print(summary.line(args.command) + (f"; seed {seed}" if draws_identities else ""))
    return 0 if summary.ok else 1


def check_target(model: str | None, target: str) -> None:
    """Refuse, before any file, a counterfactual class the model does not know."""
    classes = load_config(require_complete(resolve_model(model)) / "config.yaml").classes
    if target not in classes:
        raise InputError(f"unknown class {target!r}; the model knows {', '.join(classes)}")


def run_batch(job: ModelJob, progress: bool = True, cluster: ClusterOptions | None = None) -> Summary:
    """Process every file under ``job.src`` with ``job.command`` (``anonymize`` or ``counterfactual``); see the
    module docstring."""
    src = job.src
    inputs = job.layout().inputs()
    if not inputs:
        raise InputError(f"{src} holds no files")
    if src.is_file() and image_format(src) is None:
        raise InputError(f"{src.name} is not a {IMAGE_KINDS} image")
    summary = run_files(job, inputs, progress=progress, refuse=(InputError,), fatal=(ModelError,), cluster=cluster)
    if not summary.done and not summary.refused and not summary.failed:
        raise InputError(f"{src} holds no {IMAGE_KINDS} images")
    return summary
