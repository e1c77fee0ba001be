"""``monai-anon train``: train a model folder from a YAML config (resumes from its checkpoint)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the disentanglement model and identity generator",
                       description="Train a model folder. Re-running with the same OUT resumes from its "
                                   "checkpoint. Options given here override the config file.")
    p.add_argument("out", help="model folder to write (e.g. models/my-model)")
    p.add_argument("--config", help="YAML training config (defaults apply to keys it omits)")
    p.add_argument("--data", help="folder with labels.csv (file,patient_id,finding); default: phantoms")
    p.add_argument("--steps", type=int, help="disentangler training steps")
    p.add_argument("--seed", type=int)
    p.add_argument("--image-size", type=int, help="model image side (power of two, 64 and up)")
    p.add_argument("--no-masks", action="store_true",
                   help="ignore the data's finding masks (labels.csv column `mask`; phantoms have them): train on "
                        "sparsity and classification only, as for images without masks")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import load_config
    from .run import train_model

    cfg = load_config(args.config, data=args.data, steps=args.steps, seed=args.seed,
                      use_masks=False if args.no_masks else None)
    if args.image_size:
        cfg.model.image_size = args.image_size
        cfg.model.__post_init__()
    out = train_model(cfg, Path(args.out), progress=not args.no_progress)
    print(f"model written to {out} ({cfg.steps} steps, image size {cfg.model.image_size})")
    return 0
