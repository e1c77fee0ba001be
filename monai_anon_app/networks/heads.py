"""Heads on the feature vectors, the crop discriminator, and the identity VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

__all__ = ["CosineClassifier", "IdentityVAE", "MedicalHead", "make_discriminator"]


class MedicalHead(nn.Module):
    """``(B, F) -> (B, n_classes)`` logits of the finding: the medical head on the medical vector, and
    the leakage adversaries that look for the finding in vectors that must not carry it."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, n_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class CosineClassifier(nn.Module):
    """Closed-set identity head with normalised weights and features: ``(B, I) -> (B, n_patients)``.

    Cosine logits make the class scores depend only on the embedding's direction, which is also what
    the metric (contrastive) loss shapes, so both losses agree on one identity geometry.
    """

    def __init__(self, in_features: int, n_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, in_features) * 0.1)
        self.scale = scale

    def forward(self, identity: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(identity, dim=1) @ F.normalize(self.weight, dim=1).t()


def make_discriminator(spatial_dims: int, channels: int = 32, layers: int = 3) -> nn.Module:
    """MONAI's PatchGAN discriminator: ``(B, 1, H, W) -> (B, 1, h, w)`` realness logits."""
    return PatchDiscriminator(spatial_dims=spatial_dims, num_layers_d=layers, channels=channels,
                              in_channels=1, out_channels=1, norm="INSTANCE")


class IdentityVAE(nn.Module):
    """VAE over identity vectors ``(B, I)`` with a ``latent_dim`` Gaussian latent.

    ``sample(n, generator)`` draws synthetic identity vectors ``(n, I)``. Latents are drawn from a
    Gaussian fitted to the encoded training identities (:meth:`fit_prior`, an ex-post density estimate)
    rather than from ``N(0, I)``, whose samples fall in the prior's holes and decode to atypical, blurred
    identities; until :meth:`fit_prior` runs it is ``N(0, I)``. The training loss (see
    :mod:`monai_anon_app.training.identity_vae`) keeps samples away from every training identity.
    """

    def __init__(self, identity_dim: int, latent_dim: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.enc = nn.Sequential(nn.Linear(identity_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 2 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, identity_dim))
        self.register_buffer("prior_mean", torch.zeros(latent_dim))
        self.register_buffer("prior_scale_tril", torch.eye(latent_dim))

    def encode(self, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(identity).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def forward(self, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(identity)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def fit_prior(self, identities: torch.Tensor, jitter: float = 1e-5) -> None:
        """Fit the sampling Gaussian to the posterior means of ``identities (N, I)``; needs ``N >= 2``."""
        if len(identities) < 2:
            raise ValueError("fitting the identity prior needs at least 2 identity vectors")
        mu, _ = self.encode(identities)
        cov = torch.cov(mu.T) + jitter * torch.eye(self.latent_dim, device=mu.device)
        self.prior_mean.copy_(mu.mean(0))
        self.prior_scale_tril.copy_(torch.linalg.cholesky(cov))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``(n, I)`` identity vectors; ``temperature`` scales the sampling Gaussian's spread."""
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.prior_mean.device)
        return self.decode(self.prior_mean + temperature * eps @ self.prior_scale_tril.T)
