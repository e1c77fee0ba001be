"""The evaluation report: ``report.md`` with the metric tables and ``examples.png``.

``examples.png`` has one block per finding class: the original, anonymized with several seeds, and a
counterfactual towards each other class; below each, its difference to the original. A reader should
see at a glance that the finding stayed and the person changed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["CARD_END", "CARD_START", "targets_table", "update_model_card", "write_report"]

CARD_START = "<!-- metrics table: generated from metrics.json by `monai-anon evaluate --update-card` -->"
CARD_END = "<!-- end of metrics table -->"


def _example_rows(cfg, test_images, anon, x, cf_images, cases) -> list[tuple[str, list]]:
    picks = []
    for finding in anon.classes:  # one example of each class first, then more of them in turn
        picks += [i for i, c in enumerate(cases) if c.finding.kind == finding][:1]
    picks = picks[: max(cfg.figure_rows, 1)]
    rows = []
    for i in picks:
        panels = [("original", test_images[i])]
        for s in range(cfg.figure_seeds):
            img, _ = anon.anonymize_model(x[i: i + 1], [cfg.anonymize_seed + 1000 * (s + 1) + i])
            panels.append((f"anonymized (seed {s + 1})", img[0, 0].numpy()))
        for target, by_index in cf_images.items():
            if i in by_index:
                panels.append((f"counterfactual → {target}", by_index[i]))
        rows.append((f"{cases[i].finding.kind}: patient {cases[i].patient_index}, visit {cases[i].visit}", panels))
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
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no text chunks in the PNG
    plt.close(fig)


def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def targets_table(metrics: dict) -> str:
    """The targets as a markdown table: value, target, the oracle's ceiling, met."""
    lines = ["| metric | measured | target | ceiling (oracle) | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{t['metric']}` | {_fmt(t['value'])} | {t['target']} | {_fmt(t.get('ceiling'))} | "
              f"{'yes' if t['met'] else '**no**'} |" for t in metrics["targets"]]
    met = sum(t["met"] for t in metrics["targets"])
    lines += ["", f"{met} of {len(metrics['targets'])} targets met. Model checksum "
                  f"`{metrics['model_checksum'][:16]}…`, evaluation code checksum "
                  f"`{metrics['evaluation_code_checksum'][:16]}…`."]
    return "\n".join(lines)


def update_model_card(card: Path, metrics: dict) -> None:
    """Replace the generated table between :data:`CARD_START` and :data:`CARD_END` in a model card."""
    text = card.read_text()
    if CARD_START not in text or CARD_END not in text:
        raise ValueError(f"{card} has no generated metrics table; add the lines\n{CARD_START}\n{CARD_END}")
    head, rest = text.split(CARD_START, 1)
    _, tail = rest.split(CARD_END, 1)
    card.write_text(f"{head}{CARD_START}\n{targets_table(metrics)}\n{CARD_END}{tail}")


def write_report(out: Path, metrics: dict, test_images: np.ndarray, anon, x: torch.Tensor, cf_images: dict,
                 cases: list, cfg) -> None:
    """Write ``report.md`` and ``examples.png`` into ``out``."""
    write_examples(out / "examples.png", _example_rows(cfg, test_images, anon, x, cf_images, cases))
    lines = [f"# Evaluation of `{metrics['model']}`", "",
             f"Image size {metrics['image_size']} px, {cfg.test_patients} held-out test patients × "
             f"{cfg.test_images_per_patient} images; judges trained on original images only "
             f"({cfg.attacker_patients} disjoint patients for A2, A3 and the localiser, {cfg.utility_patients} "
             "others for the utility judge). "
             "Ceilings are the same judges on the phantom's oracle images (true identity swaps, true "
             "counterfactuals).", "", "## Targets", "", targets_table(metrics),
             "", "## Judges on originals, reconstructions, anonymized and oracle-anonymized images", "",
             "| | utility acc | agreement | A1 / chance | A2 AUC | localisation error |",
             "| --- | --- | --- | --- | --- | --- |"]
    stacks = {name: metrics[name] for name in ("originals", "reconstructions", "anonymized")}
    stacks["oracle anonymized"] = metrics["ceilings"]["oracle_anonymized"]
    for name, m in stacks.items():
        lines.append(f"| {name} | {_fmt(m['utility_accuracy'])} | {_fmt(m.get('utility_agreement', 1.0))} | "
                     f"{_fmt(m['a1_top1_over_chance'])} | {_fmt(m['a2_auc'])} | {_fmt(m['localisation_error'])} |")
    for section in ("reconstruction", "anonymized", "counterfactuals", "explain", "synthetic_identities"):
        lines += ["", f"## {section.replace('_', ' ').capitalize()}", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in metrics[section].items()]
    lines += ["", "## Examples", "", "![examples](examples.png)", "",
              "One block per finding: original, anonymized with several seeds, counterfactuals towards the other "
              "classes; below each, its difference to the original.", ""]
    (out / "report.md").write_text("\n".join(lines))
