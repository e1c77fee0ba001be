"""``monai-anon deid INPUT OUTPUT``: PS3.15 de-identification of DICOM headers, file or folder.

Also exports the shared option handling (:func:`add_deid_arguments`, :func:`options_from_args`) that
``monai-anon anonymize`` offers too, and the folder walk (:func:`plan_outputs`) with its summary.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Summary", "add_deid_arguments", "add_parser", "options_from_args", "plan_outputs", "run"]

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
                       help="append original→new identifiers to CSV (the only output that links back; "
                            "nothing is written without this)")


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


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deid", help="de-identify DICOM headers (PS3.15 Basic Profile), file or folder",
        description="De-identify the headers of any DICOM object (images, SR, RT, SEG ...) with the PS3.15 "
                    "Basic Application Level Confidentiality Profile. Pixels are kept as they are and never "
                    "claimed clean. A folder is mirrored into OUTPUT (file and folder names are kept as they "
                    "are); files that are not DICOM are skipped and never copied. Without --key or --key-file a "
                    "random key is used, so UIDs and pseudonyms are consistent within this run only. Exit code 0 "
                    "only when every DICOM file was de-identified.")
    p.add_argument("input", type=Path, help="DICOM file or folder")
    p.add_argument("output", type=Path, help="output file or folder (mirrors INPUT)")
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


def plan_outputs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """``(input file, output file)`` pairs: a file maps to ``dst`` (or ``dst/name`` when ``dst`` is a
    folder); a folder is walked in sorted order and mirrored under ``dst``."""
    from ..data.io import InputError

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"{src} does not exist")
    if src.is_file():
        return [(src, dst / src.name if dst.is_dir() else dst)]
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise InputError(f"the output folder {dst} must not be the input folder or inside it")
    if dst.exists() and not dst.is_dir():
        raise InputError(f"{dst} is a file; the output of a folder must be a folder")
    return [(p, dst / p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import InputError
    from .batch import Skipped, process_dicom
    from .files import is_dicom

    options = options_from_args(args)
    pairs = plan_outputs(args.input, args.output)
    if not pairs:
        raise InputError(f"{args.input} holds no files")
    if Path(args.input).is_file() and not is_dicom(args.input):
        raise InputError(f"{args.input} is not a DICOM file")
    summary = Summary()
    bar = tqdm(pairs, unit="file", desc="deid", disable=args.no_progress or len(pairs) < 2, file=sys.stderr)
    for src, dst in bar:
        if not is_dicom(src):
            summary.skipped["not DICOM"] += 1
            continue
        try:
            process_dicom(src, dst, options, None, headers_only=True, derivation="")
            summary.done += 1
        except Skipped:
            summary.skipped["DICOMDIR"] += 1
        except (InputError, ValueError, OSError) as exc:
            summary.failed.append((str(src), str(exc)))
        except Exception as exc:  # one bad file must not stop the batch
            summary.failed.append((str(src), f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"))
    for name, reason in summary.failed:
        print(f"failed: {name}: {reason}", file=sys.stderr)
    print(summary.line())
    return 0 if not summary.failed else 1
