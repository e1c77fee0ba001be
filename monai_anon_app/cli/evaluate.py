"""``monai-anon evaluate``: independent judges on a held-out phantom cohort."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

from monai_anon_app.evaluation.evaluate import EvalConfig, evaluate
from monai_anon_app.evaluation.report import update_model_card
from monai_anon_app.modelfolder.registry import resolve_model


def run(args: argparse.Namespace) -> int:
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
