"""``monai-anon anonymize`` and ``monai-anon counterfactual``: files and folders of DICOM, NIfTI and PNG.

OUTPUT holds the same images in the same formats, named from new identifiers, never from the input path
(DICOM by new Study/Series/SOP UIDs, PNG and NIfTI by a keyed pseudonym) unless ``--keep-names``. Pixels
go through the model; DICOM headers through the PS3.15 de-identifier, with markers that say what was
done to the pixels. A file the model cannot take is refused with a reason (never passed through with its
original pixels) unless ``--headers-only``; files that are not images are skipped and never copied. The
summary counts done / refused / failed / skipped; the exit code is 0 only when every image asked for was
done.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .dicom.outputs import OutputLayout

__all__ = ["BatchSummary", "add_parser", "run_batch", "seed_for"]

@dataclass
class BatchSummary:
    done: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed

    def line(self, command: str) -> str:
        n_skip = sum(self.skipped.values())
        why = f" ({', '.join(f'{n} {r}' for r, n in self.skipped.most_common())})" if n_skip else ""
        return (f"{command}: {self.done} done, {len(self.refused)} refused, {len(self.failed)} failed, "
                f"{n_skip} skipped{why}")


def seed_for(base_seed: int, key: str | None) -> int:
    """The seed of an image's synthetic identity, the one rule every command and REST task follows.

    DICOM: ``key`` is the de-identifier's keyed patient key (``Deidentifier(options).identity_key(ds)``),
    so every image of a patient gets one identity per base seed (and de-identification key). Images
    without a patient (PNG, NIfTI: ``key`` None) use the base seed as it is.
    """
    if key is None:
        return int(base_seed)
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def add_parser(sub: argparse._SubParsersAction) -> None:
    from .dicom.cli import add_deid_arguments

    description = " ".join(__doc__.split("\n\n")[1].split())
    for name in ("anonymize", "counterfactual"):
        anonymize = name == "anonymize"
        p = sub.add_parser(
            name, help="anonymize images (identity replaced)" if anonymize else "make counterfactual images",
            description=description)
        p.add_argument("paths", nargs="+", metavar="INPUT OUTPUT",
                       help="input file or folder, then output file or folder"
                            + (" (with --sample: only OUTPUT)" if anonymize else ""))
        p.add_argument("--model", help="model folder or name under models/ (default: the shipped model)")
        if anonymize:
            p.add_argument("--seed", type=int, help="seed of the synthetic identities (default: random, printed)")
            p.add_argument("--candidates", type=int, default=8, help="synthetic identities drawn per image")
            p.add_argument("--mode", choices=("full", "residual"), default="full",
                           help="full: regenerate the image (default); residual: add the model's change to the "
                                "original pixels (keeps fine detail of the original, including identifying detail)")
            p.add_argument("--headers-only", action="store_true",
                           help="DICOM: de-identify headers and keep the pixels (never claimed clean)")
            p.add_argument("--sample", action="store_true", help="use the bundled sample study as INPUT")
        else:
            p.add_argument("--target", required=True, help="class of the counterfactual (e.g. nodule)")
            p.add_argument("--mode", choices=("full", "residual"), default="residual",
                           help="residual: add the model's change to the original pixels (default); full: "
                                "regenerate the whole image")
        p.add_argument("--no-progress", action="store_true")
        add_deid_arguments(p)
        p.set_defaults(func=run)


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    from .data.io import InputError

    if getattr(args, "sample", False):
        if len(args.paths) != 1:
            raise InputError("with --sample give only OUTPUT")
        from .data.sample import sample_study

        return sample_study(), Path(args.paths[0])
    if len(args.paths) != 2:
        raise InputError("give INPUT and OUTPUT")
    return Path(args.paths[0]), Path(args.paths[1])


def run(args: argparse.Namespace) -> int:
    from .dicom.cli import layout_from_args, options_from_args

    src, dst = _paths(args)
    options = options_from_args(args)
    anonymize = args.command == "anonymize"
    seed = args.seed if anonymize and args.seed is not None else secrets.randbelow(2**31)
    layout = layout_from_args(args, src, dst, options)
    summary = run_batch(layout, args.command, options, model=args.model, seed=seed,
                        candidates=getattr(args, "candidates", 8), mode=args.mode,
                        target=getattr(args, "target", None), headers_only=getattr(args, "headers_only", False),
                        progress=not args.no_progress)
    for name, reason in summary.refused:
        print(f"refused: {name}: {reason}", file=sys.stderr)
    for name, reason in summary.failed:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    if summary.done and not layout.single:
        print(f"outputs: {layout.describe()}")
    print(summary.line(args.command) + (f"; seed {seed}" if anonymize else ""))
    return 0 if summary.ok else 1


def run_batch(layout: OutputLayout, command: str, options, model: str | None = None, seed: int = 0,
              candidates: int = 8, mode: str = "full", target: str | None = None, headers_only: bool = False,
              progress: bool = True) -> BatchSummary:
    """Process every file of ``layout`` (an :class:`~monai_anon_app.dicom.outputs.OutputLayout`: the
    inputs and where each output goes); see the module docstring."""
    from tqdm import tqdm

    from .data.io import InputError, image_format, read_image, write_image
    from .dicom.batch import Refused, Skipped, process_dicom
    from .dicom.mapping import append_mapping
    from .dicom.pixel_change import of_command
    from .inference import Anonymizer, ModelError, resolve_model

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
    summary = BatchSummary()
    for path in tqdm(inputs, unit="file", desc=command, disable=not progress or len(inputs) < 2, file=sys.stderr):
        fmt = image_format(path)
        if fmt is None:
            summary.skipped["not an image"] += 1
            continue
        try:
            if fmt == "dicom":
                process_dicom(path, layout.dicom(path), options, None if headers_only else pixel_fn, change)
            elif headers_only:
                raise Refused(f"--headers-only applies to DICOM; a {fmt.upper()} file has no header to clean "
                              "and its pixels would be kept")
            else:
                image = read_image(path)
                out = layout.image(path)
                write_image(out, pixel_fn(image.pixels, None), image)
                if options.mapping_file is not None:
                    append_mapping(options.mapping_file, path, out)
            summary.done += 1
        except Skipped as exc:
            summary.skipped[exc.label] += 1
        except (Refused, InputError) as exc:
            summary.refused.append((str(path), str(exc)))
        except ModelError:
            raise  # no model: nothing in the batch can be done
        except Exception as exc:  # one bad file must not stop the batch
            summary.failed.append((str(path), f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"))
    if not summary.done and not summary.refused and not summary.failed:
        raise InputError(f"{src} holds no PNG, NIfTI or DICOM images")
    return summary
