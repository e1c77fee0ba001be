"""The ``monai-anon`` command: one sub-command per job.

The parsers (:mod:`monai_anon_app.cli.parsers`) are light; each sub-command's handler module
(``monai_anon_app.cli.<handler>``, with ``run(args) -> exit code``) is imported only when it runs, so
``monai-anon --help`` and ``monai-anon deid`` never import torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from monai_anon_app.cli.parsers import build_parser
from monai_anon_app.errors import InputError, ModelError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        handler = importlib.import_module(f"{__name__}.{args.handler}")
        return int(handler.run(args) or 0)
    except (InputError, ModelError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"monai-anon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"monai-anon {args.command}: interrupted", file=sys.stderr)
        return 130
