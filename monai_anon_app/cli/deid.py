"""``monai-anon deid INPUT OUTPUT``: PS3.15 de-identification of DICOM headers, file or folder.

Also the option handling ``monai-anon anonymize`` shares (:func:`options_from_args`,
:func:`layout_from_args`). Output names come from :class:`~monai_anon_app.dicom.outputs.OutputLayout`:
nothing of the input path by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_anon_app.cli.file_jobs import FileJob, run_files
from monai_anon_app.dicom.files import is_dicom
from monai_anon_app.dicom.keys import load_key
from monai_anon_app.dicom.options import OPTIONS, DeidOptions
from monai_anon_app.dicom.outputs import KEEP_NAMES_WARNING, OutputLayout
from monai_anon_app.errors import InputError
from monai_anon_app.network import is_loopback
from monai_anon_app.runner import Summary
from monai_anon_app.runner.cluster import ClusterOptions

__all__ = ["cluster_from_args", "layout_from_args", "options_from_args", "print_outcomes", "run"]


def options_from_args(args: argparse.Namespace) -> DeidOptions:
    """:class:`DeidOptions` from parsed arguments (``ValueError``/``InputError`` with a reason)."""
    key_file = getattr(args, "key_file", None)
    new_file = key_file is not None and not Path(key_file).exists()
    key = load_key(getattr(args, "key", None), key_file)
    if new_file:
        print(f"monai-anon: created the key file {key_file} with a random key; keep it private and reuse it "
              "for consistent output", file=sys.stderr)
    flags = {name: bool(getattr(args, name, False)) for name in OPTIONS}
    extra = {"key": key} if key is not None else {}
    return DeidOptions(**flags, mapping_file=getattr(args, "mapping_file", None), **extra)


def layout_from_args(args: argparse.Namespace, src: Path, dst: Path, options: DeidOptions) -> OutputLayout:
    """The :class:`~monai_anon_app.dicom.outputs.OutputLayout` of a run (warns on ``--keep-names``)."""
    keep = bool(getattr(args, "keep_names", False))
    layout = OutputLayout(src, dst, options.key, keep_names=keep)
    if keep and not layout.single:
        print(KEEP_NAMES_WARNING, file=sys.stderr)
    return layout


def print_outcomes(summary: Summary, layout: OutputLayout) -> None:
    """Each refused and failed file on stderr (with its reason), then where the outputs went."""
    for kind in ("refused", "failed"):
        for name, reason in getattr(summary, kind):
            print(f"{kind}: {name}: {reason}", file=sys.stderr)
    if summary.done and not layout.single:
        print(f"outputs: {layout.describe()}")


def cluster_from_args(args: argparse.Namespace) -> ClusterOptions | None:
    """The Dask cluster of ``--workers``/``--scheduler`` (None: this process); warns when a run on it could not
    be resumed (a random key or seed gives new names and pixels on every run)."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        return None
    fixed_seed = args.command != "anonymize" or getattr(args, "headers_only", False) or args.seed is not None
    if not (getattr(args, "key", None) or getattr(args, "key_file", None)) or not fixed_seed:
        print("monai-anon: note: to resume this run if it is interrupted, give --key-file (and --seed for "
              "anonymize): a random key or seed makes different outputs every run", file=sys.stderr)
    if scheduler is not None and not scheduler_is_private(scheduler):
        print("monai-anon: warning: the de-identification key and the file paths travel to the Dask cluster "
              "unencrypted; use a tls:// scheduler or a cluster on a network only you can reach", file=sys.stderr)
    return ClusterOptions(workers=workers, scheduler=scheduler, chunk_size=getattr(args, "chunk_size", None))


def scheduler_is_private(address: str) -> bool:
    """True for a TLS scheduler or one on this machine's loopback."""
    scheme, _, rest = address.partition("://")
    if scheme == "tls":
        return True
    host = (rest or scheme).rsplit(":", 1)[0].strip("[]")
    return is_loopback(host)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if Path(args.input).is_file() and not is_dicom(args.input):
        raise InputError(f"{args.input} is not a DICOM file")
    layout = layout_from_args(args, args.input, args.output, options)
    src, dst = Path(args.input), Path(args.output)
    cluster = cluster_from_args(args)
    if cluster is not None:  # workers resolve nothing against their own working folder
        src, dst = src.resolve(), dst.resolve()
    job = FileJob("deid", src, dst, options, keep_names=layout.keep_names)
    inputs = job.layout().inputs()
    if not inputs:
        raise InputError(f"{args.input} holds no files")
    summary = run_files(job, inputs, progress=not args.no_progress, cluster=cluster)
    print_outcomes(summary, layout)
    print(summary.line("deid", refusals=False))
    return 0 if summary.ok else 1
