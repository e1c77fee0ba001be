"""Result summaries for the panel: a few lines of text from the JSON details of a server's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_prediction", "summarize"]


def format_prediction(pred: dict[str, Any] | None) -> str:
    """``effusion (81 %)`` from ``{"label": ..., "probabilities": {...}}``."""
    if not pred:
        return "?"
    label = str(pred.get("label", "?"))
    probs = pred.get("probabilities") or {}
    if isinstance(probs, dict) and label in probs:
        return f"{label} ({100.0 * float(probs[label]):.0f} %)"
    return label


def _probabilities(pred: dict[str, Any] | None) -> str:
    probs = (pred or {}).get("probabilities") or {}
    if not isinstance(probs, dict) or not probs:
        return ""
    ordered = sorted(probs.items(), key=lambda kv: -float(kv[1]))
    return ", ".join(f"{k} {100.0 * float(v):.0f} %" for k, v in ordered)


def summarize(operation: str, details: dict[str, Any]) -> str:
    """A few lines for the panel from a result's JSON details."""
    lines: list[str] = []
    if operation == "anonymize":
        line = f"Synthetic identity seed: {details.get('seed', '?')}"
        if details.get("identity_seed") not in (None, details.get("seed")):
            line += f" (for this patient: {details['identity_seed']})"
        lines.append(line)
        if "identity_distance" in details:
            line = f"Distance to the nearest training identity: {float(details['identity_distance']):.3g}"
            if "source_identity_distance" in details:
                line += f" (original: {float(details['source_identity_distance']):.3g})"
            lines.append(line)
        lines.append(f"Prediction before: {format_prediction(details.get('prediction_before'))}; "
                     f"after: {format_prediction(details.get('prediction_after'))}")
    elif operation == "counterfactual":
        lines.append(f"Target: {details.get('target', '?')}")
        lines.append(f"Prediction before: {format_prediction(details.get('prediction_before'))}; "
                     f"after: {format_prediction(details.get('prediction_after'))}")
    elif operation == "explain":
        pred = details.get("prediction")
        lines.append(f"Predicted finding: {format_prediction(pred)}")
        probs = _probabilities(pred)
        if probs:
            lines.append(f"Probabilities: {probs}")
        cases = details.get("cases") or []
        for i, case in enumerate(cases, start=1):
            distance = float(case.get("distance", float("nan")))
            lines.append(f"Case {i}: {case.get('finding', '?')}, distance {distance:.3g}")
    elif operation == "export":
        summary = details.get("summary") or details
        done = summary.get("done", len(details.get("files") or []))
        refused = summary.get("refused") or []
        failed = summary.get("failed") or []
        lines.append(f"Exported {done} file(s); refused {len(refused)}; failed {len(failed)}.")
        stow = details.get("stow")
        if isinstance(stow, dict):
            lines.append(f"PACS: stored {len(stow.get('stored') or [])} file(s)." if stow.get("ok", True)
                         else f"PACS: not stored: {stow.get('error') or 'no reason given'}")
        for entry in [*refused, *failed][:5]:
            if isinstance(entry, dict):
                name, reason = entry.get("file", "?"), entry.get("reason", "")
            else:
                name, reason = entry
            lines.append(f"  {Path(str(name)).name}: {reason}")
    if details.get("model_checksum"):
        lines.append(f"Model checksum: {str(details['model_checksum'])[:16]}")
    return "\n".join(lines)
