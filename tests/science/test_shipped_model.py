"""The shipped default model: its metrics and model card belong to exactly these weights and this
evaluation code, and it anonymizes a new phantom keeping the finding while changing the person."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.evaluation.evaluate import TARGETS, code_checksum
from monai_anon_app.evaluation.report import targets_table
from monai_anon_app.inference import Anonymizer
from monai_anon_app.modelfolder.registry import DEFAULT_MODEL, resolve_model


def test_shipped_metrics_and_card_describe_the_shipped_weights_and_evaluation():
    folder = resolve_model(DEFAULT_MODEL)
    anon = Anonymizer.load(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["model_checksum"] == anon.checksum, "metrics.json is from other weights: re-run evaluate"
    assert metrics["evaluation_code_checksum"] == code_checksum(), (
        "the evaluation, phantom, network or inference code changed since metrics.json was written: "
        "run `monai-anon evaluate models/phantom-cxr out/eval --update-card`")
    assert metrics["image_size"] == anon.image_size
    assert [t["metric"] for t in metrics["targets"]] == [t[0] for t in TARGETS]
    # the card's table is the one generated from these metrics, so no stale figure can stand
    assert targets_table(metrics) in (folder / "README.md").read_text()
    assert sum(f.stat().st_size for f in folder.iterdir()) < 8 * 2**20
    assert not (folder / "checkpoint.pt").exists()


def _rings(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nodule's core, a ring around it and everything farther out, from the phantom's oracle mask."""
    core = torch.from_numpy((mask > 0.5).astype(np.float32))[None, None]
    near = F.max_pool2d(core, 9, 1, 4)[0, 0].numpy() > 0
    return core[0, 0].numpy() > 0, near & (mask < 0.05), ~near


def test_shipped_model_keeps_the_nodule_and_changes_the_person():
    """Judged with the phantom's oracle mask, not the model's own heads, on held-out nodules that are clearly
    visible in the original: the nodule's local contrast survives anonymization (and does not survive a
    counterfactual towards normal, so the check can tell), while away from the finding the anonymized image
    departs from the original far more than the model's plain reconstruction does."""
    anon = Anonymizer.load(resolve_model(DEFAULT_MODEL))
    size = anon.image_size
    checked = 0
    for case in Cohort(30, 2, seed=424242):
        if case.finding.kind != "nodule":
            continue
        image = case.image(size)
        core, ring, outside = _rings(case.mask(size))

        def contrast(x: np.ndarray, core=core, ring=ring) -> float:
            return float(x[core].mean() - x[ring].mean())

        if contrast(image) < 0.1:
            continue  # a nodule hidden behind the heart or a rib in the original says nothing here
        result = anon.anonymize(image, seed=3)
        np.testing.assert_array_equal(result.image, anon.anonymize(image, seed=3).image)
        assert result.image.shape == image.shape
        label = f"patient {case.patient_index} visit {case.visit}"
        assert contrast(result.image) > 0.5 * contrast(image), f"{label}: the nodule was lost when anonymized"
        for mode in ("full", "residual"):
            removed = anon.counterfactual(image, target="normal", mode=mode).image
            assert contrast(removed) < 0.5 * contrast(image), f"{label}: a {mode} counterfactual kept the nodule"
        change = np.abs(result.image - image)[outside].mean()
        rec_error = np.abs(anon.reconstruct(image) - image)[outside].mean()
        assert change > 1.5 * rec_error, f"{label}: the anonymized person looks unchanged"
        checked += 1
        if checked == 4:
            break
    assert checked == 4
