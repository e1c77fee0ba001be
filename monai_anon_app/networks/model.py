"""The disentanglement model as one module: encoder, generator and the two heads."""

from __future__ import annotations

import torch
from torch import nn

from .disentangler import DisentanglerConfig, Encoder, Generator, IdentityProjector
from .heads import CosineClassifier, MedicalHead

__all__ = ["DisentanglementModel"]


class DisentanglementModel(nn.Module):
    """Encoder, generator, identity projector, medical head (``n_classes``) and closed-set identity head
    (``n_patients``, on the identity embedding)."""

    def __init__(self, cfg: DisentanglerConfig, n_classes: int, n_patients: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.generator = Generator(cfg)
        self.medical_head = MedicalHead(cfg.medical_dim, n_classes)
        self.identity_projector = IdentityProjector(cfg)
        self.identity_head = CosineClassifier(cfg.identity_embedding_dim, n_patients)
        # adversaries that look for the finding where it must not be (identity map, other vector)
        self.finding_in_identity = MedicalHead(cfg.identity_dim, n_classes)
        self.finding_in_other = MedicalHead(cfg.other_dim, n_classes)

    def identity_embedding(self, identity: torch.Tensor) -> torch.Tensor:
        """``(B, I)`` identity vectors -> ``(B, E)`` embeddings (the space of every identity distance)."""
        return self.identity_projector(identity)
