"""``monai-anon train``: train a model folder from a YAML config (resumes from its checkpoint); ``--nproc N``
trains on N processes with torch DDP."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.training.fit import train_model
from monai_anon_app.training.launch import TrainingFailed


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, data=args.data, steps=args.steps, seed=args.seed,
                      use_masks=False if args.no_masks else None)
    if args.image_size:
        cfg.model.image_size = args.image_size
        cfg.model.__post_init__()
    try:
        out = train_model(cfg, Path(args.out), progress=not args.no_progress, nproc=args.nproc)
    except TrainingFailed as exc:
        print(f"monai-anon train: error: {exc}", file=sys.stderr)
        return 1
    on = f", {args.nproc} processes" if args.nproc > 1 else ""
    print(f"model written to {out} ({cfg.steps} steps, image size {cfg.model.image_size}{on})")
    return 0
