"""The evaluation report: ``report.md`` with the metric tables and ``examples.png``.

``examples.png`` has one block per example image: original, reconstruction, anonymized with several
seeds, and a counterfactual per other class; each with its difference map to the original below it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["write_report"]


def _example_rows(metrics_cfg, test_images, rec, anon, x, cf_images, cases) -> list[tuple[str, list]]:
    n = min(metrics_cfg.figure_rows, len(test_images))
    picks = []
    for finding in ("normal", "nodule", "effusion"):  # one example of each finding first
        picks += [i for i, c in enumerate(cases) if c.finding.kind == finding][:1]
    picks = (picks + [i for i in range(len(cases)) if i not in picks])[:n]
    rows = []
    for i in picks:
        panels = [("original", test_images[i]), ("reconstruction", rec[i])]
        for s in range(metrics_cfg.figure_seeds):
            img, _ = anon.anonymize_model(x[i: i + 1], [metrics_cfg.anonymize_seed + 1000 * (s + 1) + i])
            panels.append((f"anonymized (seed {s + 1})", img[0, 0].numpy()))
        for target, by_index in cf_images.items():
            if i in by_index:
                panels.append((f"counterfactual → {target}", by_index[i]))
        rows.append((f"{cases[i].patient_id} v{cases[i].visit} ({cases[i].finding.kind})", panels))
    return rows


def write_examples(path: Path, rows: list[tuple[str, list]]) -> None:
    cols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(1.9 * cols, 3.9 * len(rows)), squeeze=False)
    for r, (title, panels) in enumerate(rows):
        original = panels[0][1]
        for c in range(cols):
            top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
            top.axis("off")
            bottom.axis("off")
            if c >= len(panels):
                continue
            name, img = panels[c]
            top.imshow(img, cmap="gray", vmin=0, vmax=1)
            top.set_title(name if c else f"{title}\n{name}", fontsize=7)
            if c:
                diff = img - original
                lim = max(float(np.abs(diff).max()), 1e-3)
                bottom.imshow(diff, cmap="seismic", vmin=-lim, vmax=lim)
                bottom.set_title(f"difference (±{lim:.2f})", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def write_report(out: Path, metrics: dict, test_images: np.ndarray, rec: np.ndarray, anon, x: torch.Tensor,
                 cf_images: dict, cases: list, cfg) -> None:
    """Write ``report.md`` and ``examples.png`` into ``out``."""
    write_examples(out / "examples.png", _example_rows(cfg, test_images, rec, anon, x, cf_images, cases))
    lines = [f"# Evaluation of `{metrics['model']}`", "",
             f"Model checksum `{metrics['model_checksum'][:16]}…`, image size {metrics['image_size']} px, "
             f"{cfg.test_patients} held-out test patients × {cfg.test_images_per_patient} images; judges trained "
             f"on original images only ({cfg.attacker_patients} disjoint patients for A2 and the utility judge).",
             "", "## Targets", "", "| metric | value | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['metric']} | {_fmt(t['value'])} | {t['target']} | {'yes' if t['met'] else '**no**'} |"
              for t in metrics["targets"]]
    lines += ["", "## Judges on originals, reconstructions and anonymized images", "",
              "| | utility acc | utility AUC | agreement | A1 top-1 | A1 / chance | A2 AUC |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("originals", "reconstructions", "anonymized"):
        m = metrics[name]
        lines.append(f"| {name} | {_fmt(m['utility_accuracy'])} | {_fmt(m['utility_auc'])} | "
                     f"{_fmt(m.get('utility_agreement', 1.0))} | {_fmt(m['a1_top1'])} | "
                     f"{_fmt(m['a1_top1_over_chance'])} | {_fmt(m['a2_auc'])} |")
    for section in ("reconstruction", "counterfactuals", "synthetic_identities"):
        lines += ["", f"## {section.replace('_', ' ').capitalize()}", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in metrics[section].items()]
    lines += ["", "## Examples", "", "![examples](examples.png)", "",
              "Rows: original, reconstruction, anonymized with several seeds, counterfactuals; "
              "below each, its difference to the original.", ""]
    (out / "report.md").write_text("\n".join(lines))
