"""A short real training run end to end, checkpoint resume, and the evaluation on a tiny cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.data.writer import write_cohort
from monai_anon_app.evaluation.run import TARGETS, EvalConfig, evaluate
from monai_anon_app.inference import Anonymizer
from monai_anon_app.inference.model_dir import MODEL_FILES
from monai_anon_app.training.config import load_config
from monai_anon_app.training.disentangler import DisentanglerTrainer
from monai_anon_app.training.run import load_training_data, train_model

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
    out = train_model(cfg, tmp_path / "model", progress=False)
    assert Anonymizer.load(out).bank.medical.shape[0] > 0


def test_training_rejects_findings_outside_the_classes(tmp_path):
    write_cohort(tmp_path / "data", Cohort(4, 2, seed=12), 64, "png", progress=False)
    cfg = load_config(TINY_CONFIG, data=str(tmp_path / "data"), classes=["normal", "nodule"])
    with pytest.raises(ValueError, match="not among the configured classes"):
        train_model(cfg, tmp_path / "model", progress=False)


def test_evaluate_writes_metrics_report_and_figures(tiny_model, tmp_path):
    cfg = EvalConfig.from_dict({
        "test_patients": 4, "test_images_per_patient": 4, "attacker_patients": 6, "attacker_images_per_patient": 3,
        "a1_fit_visits": 2, "figure_rows": 2, "figure_seeds": 2,
        "utility": {"steps": 3}, "a1": {"steps": 3}, "a2": {"steps": 3}})
    metrics = evaluate(tiny_model, tmp_path, cfg, progress=False)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["model_checksum"] == metrics["model_checksum"]
    assert [t["metric"] for t in saved["targets"]] == [t[0] for t in TARGETS]
    for section in ("originals", "reconstructions", "anonymized"):
        assert 0 <= saved[section]["utility_accuracy"] <= 1 and 0 <= saved[section]["a2_auc"] <= 1
    assert 0 <= saved["counterfactuals"]["change_inside_region"] <= 1
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation")
    assert (tmp_path / "examples.png").stat().st_size > 10_000
    # a 3-step judge cannot be valid, so no privacy target may be claimed as met
    assert not any(t["met"] for t in saved["targets"] if not t["metric"].startswith(("judges", "reconstruction")))
