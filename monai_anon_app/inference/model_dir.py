"""The on-disk layout of a trained model folder and the case bank it carries.

A model folder holds plain ``state_dict``s (``torch.load(weights_only=True)`` works on every file):

========================  ========================================================================
``config.yaml``           the :class:`~monai_anon_app.training.config.TrainConfig` it was trained with
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

__all__ = ["FINDING_JUDGE", "MODEL_FILES", "CaseBank", "checksum", "load_json", "save_json"]

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
