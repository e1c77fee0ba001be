"""One rank of a training on several processes: ``python -m torch.distributed.run ... -m
monai_anon_app.training.ddp_worker CONFIG OUT [--no-progress]`` (started by
:func:`monai_anon_app.training.launch.launch`, which reads rank 0's progress lines back)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch.distributed as dist

from monai_anon_app.errors import InputError, ModelError
from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.training.distributed import init_process_group
from monai_anon_app.training.fit import train_model
from monai_anon_app.training.launch import progress_line
from monai_anon_app.training.trainer import StepLog

__all__ = ["main"]


def _print_progress(log: StepLog) -> None:
    print(progress_line(log), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="YAML training config (written by launch)")
    ap.add_argument("out", help="model folder")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    ranks = init_process_group()
    try:
        train_model(load_config(args.config), args.out, progress=not args.no_progress,
                    on_step=_print_progress if ranks.main else None)
    except (InputError, ModelError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"monai-anon train (rank {ranks.rank} of {ranks.world}): error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
