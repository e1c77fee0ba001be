"""A trained model folder: its files, the case bank it carries, and how it is saved, checked and loaded.

A model folder holds plain ``state_dict``s (``torch.load(weights_only=True)`` works on every file):

========================  ========================================================================
``config.yaml``           the :class:`~monai_anon_app.modelfolder.config.TrainConfig` it was trained with
``model.pt``              encoder, generator, medical head and closed-set identity head
``identity_vae.pt``       the identity VAE
``bank.pt``               per-case medical/other vectors and findings, per-patient identity vectors
``calibration.json``      the novelty threshold for synthetic identities and how it was calibrated
``finding_judge.pt``      (optional) the frozen finding classifier that scored the swap losses in training
``metrics.json``          (optional) ``monai-anon evaluate`` results
``README.md``             (optional) the model card
========================  ========================================================================

The bank's identity vectors can regenerate training patients' anatomy: treat a model folder trained
on real images as sensitive data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from monai_anon_app.errors import ModelError
from monai_anon_app.modelfolder.config import TrainConfig, load_config
from monai_anon_app.networks import DisentanglementModel, IdentityVAE

__all__ = ["FINDING_JUDGE", "MODEL_FILES", "CaseBank", "LoadedModel", "checksum", "is_complete", "load_json",
           "load_model", "missing_files", "require_complete", "save_json", "save_model"]

MODEL_FILES = ("config.yaml", "model.pt", "identity_vae.pt", "bank.pt", "calibration.json")
FINDING_JUDGE = "finding_judge.pt"


@dataclass
class CaseBank:
    """Training cases as feature vectors (no pixels).

    ``medical (N, M)``, ``other (N, O)``, ``finding (N,)`` class indices, ``confidence (N,)`` medical-head
    probability of the true class, ``patient (N,)`` patient indices and ``identities (P, I)`` the mean
    identity vector of each training patient.
    """

    medical: torch.Tensor
    other: torch.Tensor
    finding: torch.Tensor
    confidence: torch.Tensor
    patient: torch.Tensor
    identities: torch.Tensor

    def save(self, path: str | Path) -> None:
        torch.save(self.__dict__, path)

    @classmethod
    def load(cls, path: str | Path) -> CaseBank:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def checksum(model_dir: str | Path) -> str:
    """SHA-256 over the weight and bank files: identifies exactly which model produced a result."""
    h = hashlib.sha256()
    for name in ("model.pt", "identity_vae.pt", "bank.pt", "calibration.json"):
        h.update(name.encode())
        h.update((Path(model_dir) / name).read_bytes())
    return h.hexdigest()


def save_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def missing_files(folder: str | Path) -> list[str]:
    """The required files :data:`MODEL_FILES` that ``folder`` lacks."""
    return [n for n in MODEL_FILES if not (Path(folder) / n).is_file()]


def is_complete(folder: str | Path | None) -> bool:
    """True when ``folder`` holds every file a model folder needs."""
    return folder is not None and Path(folder).is_dir() and not missing_files(folder)


def require_complete(folder: str | Path) -> Path:
    """``folder`` as a path; :class:`~monai_anon_app.errors.ModelError` when it is not a complete model folder."""
    d = Path(folder)
    if not d.is_dir():
        raise ModelError(f"model folder {d} does not exist")
    missing = missing_files(d)
    if missing:
        raise ModelError(f"model folder {d} lacks {', '.join(missing)}; train it with `monai-anon train`")
    return d


def save_model(folder: str | Path, config: TrainConfig, model: DisentanglementModel, vae: IdentityVAE,
               bank: CaseBank, calibration: dict, finding_judge: torch.nn.Module | None = None) -> Path:
    """Write a complete model folder (every file of :data:`MODEL_FILES`, and the judge when given)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.yaml")
    torch.save(model.state_dict(), out / "model.pt")
    torch.save(vae.state_dict(), out / "identity_vae.pt")
    if finding_judge is not None:
        torch.save(finding_judge.state_dict(), out / FINDING_JUDGE)
    bank.save(out / "bank.pt")
    save_json(out / "calibration.json", calibration)
    return out


@dataclass
class LoadedModel:
    """A model folder's networks (eval mode), case bank, calibration, config and checksum."""

    model: DisentanglementModel
    vae: IdentityVAE
    bank: CaseBank
    calibration: dict
    config: TrainConfig
    checksum: str


def load_model(folder: str | Path) -> LoadedModel:
    """Load a model folder; :class:`~monai_anon_app.errors.ModelError` says what is missing or does not fit."""
    d = require_complete(folder)
    try:
        cfg = load_config(d / "config.yaml")
    except (ValueError, TypeError) as exc:
        raise ModelError(f"the config.yaml in {d} does not fit this version of monai-anon ({exc}); "
                         "retrain the model") from None
    bank = CaseBank.load(d / "bank.pt")
    state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
    try:
        model = DisentanglementModel(cfg.model, len(cfg.classes), state["identity_head.weight"].shape[0])
        model.load_state_dict(state)
        vae = IdentityVAE(cfg.model.identity_dim, cfg.vae_latent_dim, cfg.vae_hidden)
        vae.load_state_dict(torch.load(d / "identity_vae.pt", map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as exc:
        raise ModelError(f"the weights in {d} do not fit this version of monai-anon's networks "
                         f"({str(exc).splitlines()[0][:120]}); retrain the model") from None
    return LoadedModel(model.eval(), vae.eval(), bank, load_json(d / "calibration.json"), cfg, checksum(d))
