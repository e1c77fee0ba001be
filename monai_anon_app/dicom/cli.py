"""``monai-anon deid INPUT OUTPUT``: PS3.15 de-identification of DICOM headers, file or folder.

Also exports the shared option handling (:func:`add_deid_arguments`, :func:`options_from_args`,
:func:`layout_from_args`) that ``monai-anon anonymize`` offers too, and the summary. Output names come
from :class:`~monai_anon_app.dicom.outputs.OutputLayout`: nothing of the input path by default.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .options import DeidOptions
    from .outputs import OutputLayout

__all__ = ["Summary", "add_deid_arguments", "add_parser", "layout_from_args", "options_from_args", "run"]

_FLAGS = (
    ("--retain-modified-dates", "keep intervals: shift every date by one keyed offset per patient"),
    ("--retain-full-dates", "keep dates and times unchanged (excludes --retain-modified-dates)"),
    ("--retain-patient-characteristics", "keep sex, age, size, weight and similar"),
    ("--retain-device-identity", "keep device serial numbers, station names and similar"),
    ("--retain-institution-identity", "keep institution name, address and department"),
    ("--clean-descriptors", "keep descriptions and comments with identifiers removed"),
    ("--retain-uids", "keep original UIDs"),
    ("--retain-safe-private", "keep private attributes known to be safe (all others are dropped)"),
)


def add_deid_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the PS3.15 option flags, ``--key``/``--key-file`` and ``--mapping-file`` to ``parser``."""
    group = parser.add_argument_group("de-identification options (DICOM PS3.15 Annex E)")
    for flag, text in _FLAGS:
        group.add_argument(flag, action="store_true", help=text)
    keys = group.add_mutually_exclusive_group()
    keys.add_argument("--key", metavar="TEXT",
                      help="secret for UIDs, pseudonyms and date offsets: same key, same output in every batch")
    keys.add_argument("--key-file", metavar="FILE", type=Path,
                      help="read the secret from FILE (created with a random key if missing); keep it private")
    group.add_argument("--mapping-file", metavar="CSV", type=Path,
                       help="append original→new identifiers and input→output paths to CSV (the only output "
                            "that links back; nothing is written without this)")
    group.add_argument("--keep-names", action="store_true",
                       help="name outputs as the inputs are named (default: DICOM by new Study/Series/SOP UIDs, "
                            "PNG and NIfTI by a keyed pseudonym); input names may carry identifiers")


def options_from_args(args: argparse.Namespace):
    """:class:`DeidOptions` from parsed arguments (``ValueError``/``InputError`` with a reason)."""
    from .keys import load_key
    from .options import DeidOptions

    key_file = getattr(args, "key_file", None)
    new_file = key_file is not None and not Path(key_file).exists()
    key = load_key(getattr(args, "key", None), key_file)
    if new_file:
        print(f"monai-anon: created the key file {key_file} with a random key; keep it private and reuse it "
              "for consistent output", file=sys.stderr)
    flags = {flag[2:].replace("-", "_"): bool(getattr(args, flag[2:].replace("-", "_"), False)) for flag, _ in _FLAGS}
    extra = {"key": key} if key is not None else {}
    return DeidOptions(**flags, mapping_file=getattr(args, "mapping_file", None), **extra)


def layout_from_args(args: argparse.Namespace, src: Path, dst: Path, options: DeidOptions) -> OutputLayout:
    """The :class:`~monai_anon_app.dicom.outputs.OutputLayout` of a run (warns on ``--keep-names``)."""
    from .outputs import KEEP_NAMES_WARNING, OutputLayout

    keep = bool(getattr(args, "keep_names", False))
    layout = OutputLayout(src, dst, options.key, keep_names=keep)
    if keep and not layout.single:
        print(KEEP_NAMES_WARNING, file=sys.stderr)
    return layout


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deid", help="de-identify DICOM headers (PS3.15 Basic Profile), file or folder",
        description="De-identify the headers of any DICOM object (images, SR, RT, SEG ...) with the PS3.15 "
                    "Basic Application Level Confidentiality Profile. Pixels are kept as they are and never "
                    "claimed clean. Outputs are named <StudyUID>/<SeriesUID>/<SOPUID>.dcm by their new UIDs, "
                    "never from the input path (unless --keep-names); files that are not DICOM are skipped and "
                    "never copied. Without --key or --key-file a "
                    "random key is used, so UIDs and pseudonyms are consistent within this run only. Exit code 0 "
                    "only when every DICOM file was de-identified.")
    p.add_argument("input", type=Path, help="DICOM file or folder")
    p.add_argument("output", type=Path, help="output file or folder")
    add_deid_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(func=run)


@dataclass
class Summary:
    """Counts and reasons of a batch."""

    done: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def line(self, command: str = "deid") -> str:
        skipped = sum(self.skipped.values())
        why = f" ({', '.join(f'{n} {r}' for r, n in self.skipped.most_common())})" if skipped else ""
        return f"{command}: {self.done} done, {skipped} skipped{why}, {len(self.failed)} failed"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import InputError
    from .batch import Skipped, process_dicom
    from .files import is_dicom
    from .pixel_change import KEPT

    options = options_from_args(args)
    if Path(args.input).is_file() and not is_dicom(args.input):
        raise InputError(f"{args.input} is not a DICOM file")
    layout = layout_from_args(args, args.input, args.output, options)
    inputs = layout.inputs()
    if not inputs:
        raise InputError(f"{args.input} holds no files")
    summary = Summary()
    bar = tqdm(inputs, unit="file", desc="deid", disable=args.no_progress or len(inputs) < 2, file=sys.stderr)
    for src in bar:
        if not is_dicom(src):
            summary.skipped["not DICOM"] += 1
            continue
        try:
            process_dicom(src, layout.dicom(src), options, None, KEPT)
            summary.done += 1
        except Skipped as exc:
            summary.skipped[exc.label] += 1
        except (InputError, ValueError, OSError) as exc:
            summary.failed.append((str(src), str(exc)))
        except Exception as exc:  # one bad file must not stop the batch
            summary.failed.append((str(src), f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"))
    for name, reason in summary.failed:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    if summary.done and not layout.single:
        print(f"outputs: {layout.describe()}")
    print(summary.line())
    return 0 if not summary.failed else 1
