"""``monai-anon evaluate``: independent judges on a held-out phantom cohort."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="judge a model with independent attackers and a utility judge",
                       description="Evaluate a model folder on a held-out phantom cohort with judges trained on "
                                   "original images only; writes metrics.json, report.md and examples.png.")
    p.add_argument("model", help="model folder or name under models/")
    p.add_argument("out", help="output folder (judges are cached in OUT/judges)")
    p.add_argument("--config", help="YAML evaluation config (cohort sizes, judge steps)")
    p.add_argument("--copy-metrics", action="store_true", help="also copy metrics.json into the model folder")
    p.add_argument("--update-card", action="store_true",
                   help="copy metrics.json into the model folder and regenerate the model card's metrics table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    import yaml

    from ..inference import resolve_model
    from .report import update_model_card
    from .run import EvalConfig, evaluate

    cfg = EvalConfig.from_dict(yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else EvalConfig()
    model = resolve_model(args.model)
    metrics = evaluate(model, args.out, cfg, progress=not args.no_progress)
    met = sum(t["met"] for t in metrics["targets"])
    for t in metrics["targets"]:
        value = t["value"] if t["value"] is None else round(t["value"], 4)
        ceiling = "" if t.get("ceiling") is None else f", oracle {t['ceiling']:.4f}"
        print(f"{'met ' if t['met'] else 'MISS'}  {t['metric']} = {value} (target {t['target']}{ceiling})")
    print(f"{met}/{len(metrics['targets'])} targets met; report in {Path(args.out) / 'report.md'}")
    if args.copy_metrics or args.update_card:
        shutil.copy(Path(args.out) / "metrics.json", model / "metrics.json")
    if args.update_card:
        update_model_card(model / "README.md", metrics)
    return 0
