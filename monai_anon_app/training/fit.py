"""End-to-end training: data -> disentangler -> case bank -> identity VAE -> calibrated model folder."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from monai_anon_app.data.datasets import ImageSet, from_cohort, load_folder
from monai_anon_app.data.phantoms import Cohort
from monai_anon_app.modelfolder.config import TrainConfig
from monai_anon_app.modelfolder.folder import CaseBank, load_model, save_model
from monai_anon_app.networks import DisentanglementModel, IdentityVAE, nearest_distance
from monai_anon_app.training.distributed import current_ranks
from monai_anon_app.training.identity_vae import calibrate_novelty, train_identity_vae
from monai_anon_app.training.launch import launch
from monai_anon_app.training.trainer import DisentanglerTrainer, StepLog, encode_all

__all__ = ["CONFIG_DIR", "NO_MASKS_WARNING", "build_bank", "fit_identity_generator", "load_training_data",
           "retrain_identity_generator", "train_model"]

#: the configs shipped with the package (``default.yaml`` trained ``models/phantom-cxr``)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
NO_MASKS_WARNING = (
    "training without finding masks: on phantoms such a model drew anatomy through its finding mask and an "
    "attacker who has the model recognised its anonymized images (A3 AUC 0.82, models/phantom-cxr/README.md); "
    "evaluate it on held-out patients before sharing any image it makes")


def load_training_data(cfg: TrainConfig) -> ImageSet:
    """The configured training images at the model's size: a folder with labels.csv, or phantoms."""
    size = cfg.model.image_size
    if cfg.data:
        return load_folder(cfg.data, size)
    return from_cohort(Cohort(cfg.phantom_patients, cfg.phantom_images_per_patient, cfg.phantom_seed), size)


def build_bank(model: DisentanglementModel, data: ImageSet, classes: list[str]) -> CaseBank:
    """Encode the training images into a :class:`CaseBank` (vectors only, no pixels)."""
    feats = encode_all(model, data.images)
    finding = torch.tensor([classes.index(f) for f in data.findings])
    with torch.no_grad():
        prob = model.medical_head(feats["medical"]).softmax(1)
    patients = sorted(set(data.patient_ids))
    pidx = torch.tensor([patients.index(p) for p in data.patient_ids])
    with torch.no_grad():
        emb = model.identity_embedding(feats["identity"])
    identities = torch.stack([emb[pidx == i].mean(0) for i in range(len(patients))])
    return CaseBank(feats["medical"], feats["other"], finding, prob[torch.arange(len(finding)), finding], pidx,
                    identities)


def fit_identity_generator(model: DisentanglementModel, train: ImageSet, held_out: ImageSet,
                           keep_away: torch.Tensor, cfg: TrainConfig, steps: int | None = None,
                           seed: int | None = None,
                           on_step: Callable[[int, dict[str, float]], None] | None = None) -> tuple[IdentityVAE, dict]:
    """Train the identity VAE on ``train``'s identity vectors and calibrate the novelty threshold on
    ``held_out`` patients against ``keep_away`` (identity embeddings ``(P, E)`` of the patients synthetic
    identities must stay away from). Returns the VAE and the calibration record."""
    steps = cfg.vae_steps if steps is None else steps
    seed = cfg.seed if seed is None else seed
    with torch.no_grad():
        held_emb = model.identity_embedding(encode_all(model, held_out.images)["identity"])
    calibration = calibrate_novelty(held_emb, keep_away, cfg.novelty_quantile)
    vae = train_identity_vae(
        encode_all(model, train.images)["identity"], keep_away, model.identity_projector, model.identity_head,
        cfg.vae_latent_dim, steps, margin=calibration["held_out_nearest_median"], beta=cfg.vae_beta,
        away_weight=cfg.vae_away_weight, entropy_weight=cfg.vae_entropy_weight, hidden=cfg.vae_hidden, seed=seed,
        on_step=on_step)
    with torch.no_grad():
        samples = model.identity_embedding(vae.sample(1000, torch.Generator().manual_seed(seed)))
    calibration["vae_acceptance_rate"] = float((nearest_distance(samples, keep_away)
                                                >= calibration["threshold"]).float().mean())
    calibration["train_patients"] = len(set(train.patient_ids))
    calibration["held_out_patients"] = len(set(held_out.patient_ids))
    return vae, calibration


def train_model(cfg: TrainConfig, out_dir: str | Path, progress: bool = True,
                on_step: Callable[[StepLog], None] | None = None,
                should_stop: Callable[[], bool] | None = None, nproc: int = 1) -> Path:
    """Train everything ``cfg`` describes into ``out_dir``; resumes from ``out_dir/checkpoint.pt``.

    ``nproc`` > 1 trains the disentangler on that many processes with torch DDP (torchrun, see
    :mod:`~monai_anon_app.training.launch`; one GPU each when CUDA is available) and returns when they are done;
    each step's batch of patients is split between them. Inside such a process group (a torchrun worker) every
    rank trains its share and rank 0 alone writes the checkpoint and the model folder.
    """
    if nproc < 1:
        raise ValueError(f"the number of training processes must be at least 1, not {nproc}")
    if nproc > 1:
        return launch(cfg, out_dir, nproc, progress=progress, on_step=on_step, should_stop=should_stop)
    ranks = current_ranks()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = load_training_data(cfg)
    train, held_out = data.split_patients(cfg.calibration_fraction, seed=cfg.seed)
    if len(set(train.patient_ids)) < 2 or len(held_out) == 0:
        raise ValueError("training needs at least 2 training patients and 1 held-out calibration patient")
    if ranks.main:
        cfg.save(out / "config.yaml")
        if train.masks is None or not cfg.use_masks:
            warnings.warn(NO_MASKS_WARNING, stacklevel=2)
    trainer = DisentanglerTrainer(cfg, train, out, ranks=ranks)
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="disentangler", unit="step",
               disable=not (progress and ranks.main))

    def _on_step(log: StepLog) -> None:
        bar.update(1)
        if log.step % 10 == 0:
            bar.set_postfix({k: f"{log.losses[k]:.3f}" for k in ("l1", "ssim", "med", "swap_ide") if k in log.losses})
        if on_step is not None:
            on_step(log)

    model = trainer.train(on_step=_on_step, should_stop=should_stop)
    bar.close()
    if trainer.step < cfg.steps or not ranks.main:
        return out  # stopped early: the checkpoint lets a later call resume; or not rank 0: rank 0 finishes
    model, judge = model.cpu(), trainer.judge.cpu()  # (trained on a GPU when a DDP rank had one)
    bank = build_bank(model, train, cfg.classes)
    vbar = tqdm(total=cfg.vae_steps, desc="identity VAE", unit="step", disable=not progress)
    vae, calibration = fit_identity_generator(model, train, held_out, bank.identities, cfg,
                                              on_step=lambda *_: vbar.update(1))
    vbar.close()
    calibration["training_seconds"] = round(time.perf_counter() - t0, 1)
    return save_model(out, cfg, model, vae, bank, calibration, finding_judge=judge)


def retrain_identity_generator(source: str | Path, data: ImageSet, out_dir: str | Path, steps: int | None = None,
                               seed: int | None = None,
                               on_step: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """A copy of the model folder ``source`` with a new identity generator and novelty threshold that also keep
    synthetic identities away from ``data``'s patients (a site's own images), written to ``out_dir``."""
    loaded = load_model(source)
    cfg, model, bank = loaded.config, loaded.model, loaded.bank
    steps = steps or cfg.vae_steps
    seed = cfg.seed if seed is None else seed
    train, held_out = data.split_patients(cfg.calibration_fraction, seed=seed)
    with torch.no_grad():  # identity embeddings: the space every identity distance is measured in
        emb = model.identity_embedding(encode_all(model, train.images)["identity"])
    patients = sorted(set(train.patient_ids))
    pidx = torch.tensor([patients.index(p) for p in train.patient_ids])
    new_patients = torch.stack([emb[pidx == i].mean(0) for i in range(len(patients))])
    keep_away = torch.cat([bank.identities, new_patients])  # the model's training patients + the site's
    vae, calibration = fit_identity_generator(model, train, held_out, keep_away, cfg, steps=steps, seed=seed,
                                              on_step=on_step)
    calibration["retrained_from"] = Path(source).name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("README.md", "metrics.json"):
        if (Path(source) / name).is_file():
            shutil.copy2(Path(source) / name, out / name)
    new_bank = CaseBank(bank.medical, bank.other, bank.finding, bank.confidence, bank.patient, keep_away)
    return save_model(out, cfg, model, vae, new_bank, calibration)
