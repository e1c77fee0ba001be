"""The disentanglement model as one module: encoder, generator and the two heads."""

from __future__ import annotations

from torch import nn

from .disentangler import DisentanglerConfig, Encoder, Generator
from .heads import CosineClassifier, MedicalHead

__all__ = ["DisentanglementModel"]


class DisentanglementModel(nn.Module):
    """Encoder, generator, medical head (``n_classes``) and closed-set identity head (``n_patients``)."""

    def __init__(self, cfg: DisentanglerConfig, n_classes: int, n_patients: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.generator = Generator(cfg)
        self.medical_head = MedicalHead(cfg.medical_dim, n_classes)
        self.identity_head = CosineClassifier(cfg.identity_dim, n_patients)
