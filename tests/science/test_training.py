"""A short real training run end to end, checkpoint resume, and the evaluation on a tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_anon_app.data.cohort_writer import write_cohort
from monai_anon_app.data.datasets import load_folder
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.evaluation.evaluate import TARGETS, EvalConfig, code_checksum, evaluate
from monai_anon_app.evaluation.report import CARD_END, CARD_START, targets_table, update_model_card
from monai_anon_app.inference import Anonymizer
from monai_anon_app.modelfolder.config import load_config
from monai_anon_app.modelfolder.folder import MODEL_FILES
from monai_anon_app.training.fit import load_training_data, train_model
from monai_anon_app.training.trainer import DisentanglerTrainer

TINY_CONFIG = Path(__file__).resolve().parents[2] / "monai_anon_app" / "training" / "configs" / "tiny.yaml"


def test_tiny_model_folder_is_complete_and_loads_weights_only(tiny_model):
    for name in MODEL_FILES:
        assert (tiny_model / name).is_file()
    for name in ("model.pt", "identity_vae.pt", "bank.pt"):
        torch.load(tiny_model / name, weights_only=True)  # plain state_dicts / tensors only
    calibration = json.loads((tiny_model / "calibration.json").read_text())
    assert calibration["threshold"] > 0 and calibration["held_out_patients"] >= 1
    assert Anonymizer.load(tiny_model).image_size == 64


def test_training_resumes_from_its_checkpoint(tmp_path):
    cfg = load_config(TINY_CONFIG, steps=4, checkpoint_every=2)
    data = load_training_data(cfg)
    first = DisentanglerTrainer(cfg, data, tmp_path)
    first.train_step()
    first.train_step()
    first.save_checkpoint()
    resumed = DisentanglerTrainer(cfg, data, tmp_path)
    assert resumed.step == 2
    for a, b in zip(first.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    resumed.train()
    assert resumed.step == 4


def test_training_is_seeded(tmp_path):
    cfg = load_config(TINY_CONFIG, steps=2)
    data = load_training_data(cfg)
    a = DisentanglerTrainer(cfg, data, tmp_path / "a")
    b = DisentanglerTrainer(cfg, data, tmp_path / "b")
    la, lb = a.train_step(), b.train_step()
    assert la == lb


def test_train_on_a_folder_with_labels(tmp_path):
    write_cohort(tmp_path / "data", Cohort(6, 3, seed=11), 64, "png", progress=False)
    cfg = load_config(TINY_CONFIG, data=str(tmp_path / "data"), steps=2, vae_steps=5)
    with pytest.warns(UserWarning, match="without finding masks"):  # phantoms written as PNG carry no masks
        out = train_model(cfg, tmp_path / "model", progress=False)
    assert Anonymizer.load(out).bank.medical.shape[0] > 0


def test_masks_supervise_training_when_the_data_has_them(tmp_path):
    """Phantom cohorts carry their oracle masks; with ``use_masks`` the mask loss is trained, without it
    (as for an institution's images without masks) the trainer runs on sparsity and classification only."""
    with_masks = DisentanglerTrainer(load_config(TINY_CONFIG), load_training_data(load_config(TINY_CONFIG)),
                                     tmp_path / "a")
    assert with_masks.masks is not None and float(with_masks.masks.amax()) > 0.5
    assert "mask" in with_masks.train_step()
    cfg = load_config(TINY_CONFIG, use_masks=False)
    without = DisentanglerTrainer(cfg, load_training_data(cfg), tmp_path / "b")
    assert without.masks is None
    losses = without.train_step()
    assert "mask" not in losses and "sparse" in losses


def test_identity_adversaries_train_resume_and_stay_out_of_the_published_model(tmp_path):
    """With ``identity_leakage`` the trainer fits patient-embedding adversaries on the medical and the other
    vector (their weights move and resume from the checkpoint) without adding them to the model's weights;
    ``medical_mask`` supervises the mask before the lung gate."""
    cfg = load_config(TINY_CONFIG, steps=2)
    assert (cfg.weights.identity_leakage, cfg.weights.medical_mask) == (0.1, 1.0)
    data = load_training_data(cfg)
    first = DisentanglerTrainer(cfg, data, tmp_path)
    start = {k: v.clone() for k, v in first.identity_adversaries.state_dict().items()}
    assert sorted(first.identity_adversaries) == ["medical", "other"]
    losses = first.train_step()
    assert {"id_leak", "medical_mask"} <= set(losses)
    trained = first.identity_adversaries.state_dict()
    assert any(not torch.equal(start[k], trained[k]) for k in start)
    first.save_checkpoint()
    resumed = DisentanglerTrainer(cfg, data, tmp_path)
    for k, v in trained.items():
        assert torch.equal(resumed.identity_adversaries.state_dict()[k], v)
    assert not any("adversar" in k for k in first.model.state_dict())
    cfg.weights.identity_leakage = 0.0
    off = DisentanglerTrainer(cfg, data, tmp_path / "off")
    assert len(off.identity_adversaries) == 0 and "id_leak" not in off.train_step()


def test_cross_visit_partners_stay_on_the_batch_device():
    """Each image's partner is another visit of its patient (itself when it has none), computed on the device
    of the patient indices: a tensor made on the CPU beside a GPU batch stops a NCCL rank (the meta device,
    which holds no data, stands in for the GPU here)."""
    p = torch.tensor([0, 0, 1, 2, 2, 2])
    partners = DisentanglerTrainer._partners(p)
    assert partners.tolist() == [1, 0, 2, 4, 5, 3]
    assert DisentanglerTrainer._partners(p.to("meta")).device.type == "meta"


def test_a_mask_column_in_labels_csv_is_read(tmp_path):
    cohort = Cohort(2, 2, seed=13)
    write_cohort(tmp_path, cohort, 64, "png", progress=False)
    labels = (tmp_path / "labels.csv").read_text().splitlines()
    rows = [labels[0] + ",mask"]
    for line, case in zip(labels[1:], cohort):
        name = ""
        if case.finding.kind != "normal":
            name = f"mask_{case.patient_index}_{case.visit}.png"
            Image.fromarray((case.mask(64) * 255).astype(np.uint8)).save(tmp_path / name)
        rows.append(f"{line},{name}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = load_folder(tmp_path, 64)
    assert data.masks is not None and data.masks.shape == data.images.shape
    for mask, case in zip(data.masks, cohort):
        np.testing.assert_allclose(mask, case.mask(64), atol=1 / 255 + 1e-6)


def test_training_rejects_findings_outside_the_classes(tmp_path):
    write_cohort(tmp_path / "data", Cohort(4, 2, seed=12), 64, "png", progress=False)
    cfg = load_config(TINY_CONFIG, data=str(tmp_path / "data"), classes=["normal", "nodule"])
    with pytest.raises(ValueError, match="not among the configured classes"):
        train_model(cfg, tmp_path / "model", progress=False)


def test_evaluate_writes_metrics_report_and_figures(tiny_model, tmp_path):
    cfg = EvalConfig.from_dict({
        "test_patients": 4, "test_images_per_patient": 4, "attacker_patients": 6, "attacker_images_per_patient": 3,
        "utility_patients": 6, "utility_images_per_patient": 3, "a1_fit_visits": 2, "figure_rows": 2, "figure_seeds": 2,
        "explain_images": 2, "utility": {"steps": 3}, "a1": {"steps": 3}, "a2": {"steps": 3}, "a3": {"steps": 3},
        "localiser": {"steps": 3}})
    metrics = evaluate(tiny_model, tmp_path, cfg, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model_checksum"] == metrics["model_checksum"] == Anonymizer.load(tiny_model).checksum
    assert saved["evaluation_code_checksum"] == code_checksum()
    assert [t["metric"] for t in saved["targets"]] == [t[0] for t in TARGETS]
    # every counterfactual and anonymization target has its oracle ceiling beside it
    ceilings = {t["metric"]: t["ceiling"] for t in saved["targets"]}
    assert all(ceilings[m] is not None for m in ceilings if m.startswith(("counterfactuals", "anonymized.a2")))
    # the oracle counterfactual changes only the finding: nearly all of its change is in the region
    assert saved["ceilings"]["oracle_counterfactuals"]["change_inside_region"] > 0.9
    assert saved["explain"]["cases"] == 2 * 3
    for section in ("originals", "reconstructions", "anonymized"):
        assert 0 <= saved[section]["utility_accuracy"] <= 1 and 0 <= saved[section]["a2_auc"] <= 1
    assert 0 <= saved["counterfactuals"]["change_inside_region"] <= 1
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation")
    assert (tmp_path / "examples.png").stat().st_size > 10_000
    # a 3-step judge cannot be valid, so no privacy target may be claimed as met
    assert not any(t["met"] for t in saved["targets"] if not t["metric"].startswith(("judges", "reconstruction")))


def test_the_model_card_table_is_generated_from_metrics(tmp_path):
    metrics = {"model_checksum": "a" * 64, "evaluation_code_checksum": "b" * 64, "targets": [
        {"metric": "anonymized.a2_auc", "value": 0.51, "target": "<= 0.6", "met": True, "ceiling": 0.5},
        {"metric": "counterfactuals.validity", "value": 0.7, "target": ">= 0.85", "met": False, "ceiling": 0.99}]}
    card = tmp_path / "README.md"
    card.write_text(f"# card\n\n{CARD_START}\nstale figures\n{CARD_END}\n\nmore text\n")
    update_model_card(card, metrics)
    text = card.read_text()
    assert targets_table(metrics) in text and "stale figures" not in text and text.endswith("more text\n")
    assert "| `counterfactuals.validity` | 0.700 | >= 0.85 | 0.990 | **no** |" in text
    (tmp_path / "bare.md").write_text("# no table\n")
    with pytest.raises(ValueError, match="no generated metrics table"):
        update_model_card(tmp_path / "bare.md", metrics)
