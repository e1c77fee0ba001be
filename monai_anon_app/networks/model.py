"""The disentanglement model as one module: encoder, generator and the two heads."""

from __future__ import annotations

import torch
from torch import nn

from monai_anon_app.networks.disentangler import DisentanglerConfig, Encoder, Generator, IdentityProjector
from monai_anon_app.networks.heads import CosineClassifier, GridClassifier, MaskClassifier, MLPHead

__all__ = ["DisentanglementModel"]


class DisentanglementModel(nn.Module):
    """Encoder, generator, identity projector, medical head (``n_classes``, on the finding mask and
    appearance) and closed-set identity head (``n_patients``, on the identity embedding), with the
    adversaries that look for the finding where it must not be."""

    def __init__(self, cfg: DisentanglerConfig, n_classes: int, n_patients: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.generator = Generator(cfg)
        self.medical_head = MaskClassifier(cfg, n_classes)
        self.identity_projector = IdentityProjector(cfg)
        self.identity_head = CosineClassifier(cfg.identity_embedding_dim, n_patients)
        # adversaries that look for the finding where it must not be (identity map, other vector)
        self.finding_in_identity = GridClassifier(cfg.spatial_dims, cfg.identity_channels, n_classes)
        self.finding_in_other = MLPHead(cfg.other_dim, n_classes)

    def identity_embedding(self, identity: torch.Tensor) -> torch.Tensor:
        """``(B, I)`` identity vectors -> ``(B, E)`` embeddings (the space of every identity distance)."""
        return self.identity_projector(identity)

    def identity_grid(self, identity: torch.Tensor) -> torch.Tensor:
        """``(B, I)`` flattened identity vectors -> ``(B, C_id, L, …)`` maps."""
        return identity.view(identity.shape[0], self.cfg.identity_channels,
                             *(self.cfg.latent_size,) * self.cfg.spatial_dims)
