"""``monai-anon train``: train a model folder from a YAML config (resumes from its checkpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.training.fit import train_model


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, data=args.data, steps=args.steps, seed=args.seed,
                      use_masks=False if args.no_masks else None)
    if args.image_size:
        cfg.model.image_size = args.image_size
        cfg.model.__post_init__()
    out = train_model(cfg, Path(args.out), progress=not args.no_progress)
    print(f"model written to {out} ({cfg.steps} steps, image size {cfg.model.image_size})")
    return 0
