"""The ``monai-anon`` command: one sub-command per job, each defined next to the code it drives.

Every sub-command module exposes ``add_parser(subparsers)``; heavy imports (torch, pydicom) happen
inside the handlers so ``monai-anon --help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__

COMMAND_MODULES = (
    "monai_anon_app.data.cli",  # phantoms
    "monai_anon_app.training.cli",  # train
    "monai_anon_app.evaluation.cli",  # evaluate
    "monai_anon_app.batch",  # anonymize, counterfactual
    "monai_anon_app.dicom.cli",  # deid
    "monai_anon_app.tasks.serve",  # serve
)


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-anon", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import InputError, ModelError

    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"monai-anon {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except (InputError, ModelError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"monai-anon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monai-anon {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
