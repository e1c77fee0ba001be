"""Heads on the feature vectors, the crop discriminator, and the identity VAE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import PatchDiscriminator
from torch import nn

from monai_anon_app.networks.disentangler import DisentanglerConfig, split_medical

__all__ = ["CosineClassifier", "GridClassifier", "IdentityVAE", "MLPHead", "MaskClassifier", "make_discriminator"]


class MLPHead(nn.Module):
    """``(B, F) -> (B, out_features)``, one hidden layer: the leakage adversaries on vectors (finding logits
    from the other vector; a patient embedding from the medical and the other vector)."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class GridClassifier(nn.Module):
    """``(B, C, H, …) -> (B, n_classes)``: strided convolutions, then global average and max pooling.

    An adversary with real capacity against a finding hidden anywhere in a spatial map (a linear or MLP
    probe on the flattened map misses local patterns that a convolution finds at once).
    """

    def __init__(self, spatial_dims: int, in_channels: int, n_classes: int, channels: tuple[int, ...] = (32, 64),
                 act: str | tuple = ("leakyrelu", {"negative_slope": 0.2})) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers.append(Convolution(spatial_dims, prev, ch, strides=2, kernel_size=3, act=act))
            prev = ch
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(2 * prev, n_classes)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2·C_last)`` average- and max-pooled features."""
        h = self.conv(x).flatten(2)
        return torch.cat([h.mean(-1), h.amax(-1)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pooled(x))


class MaskClassifier(nn.Module):
    """The medical head: ``(B, R^D + A)`` medical vectors -> ``(B, n_classes)`` finding logits.

    The finding mask is read by a small convolutional net whose features are pooled twice, globally
    and with the mask itself as attention weights; the appearance code joins before the last layer. An
    empty mask has nothing to attend to, which is what "normal" looks like.
    """

    def __init__(self, cfg: DisentanglerConfig, n_classes: int, channels: tuple[int, ...] = (16, 32),
                 hidden: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.spatial_dims
        self.conv = nn.Sequential(*[Convolution(d, i, o, kernel_size=3, act=cfg.act)
                                    for i, o in zip((1, *channels[:-1]), channels)])
        self.net = nn.Sequential(nn.Linear(3 * channels[-1] + cfg.appearance_dim + 1, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, n_classes))

    def forward(self, medical: torch.Tensor) -> torch.Tensor:
        mask, appearance = split_medical(medical, self.cfg)
        h = self.conv(mask).flatten(2)
        w = mask.flatten(2)
        attended = (h * w).sum(-1) / (w.sum(-1) + 1e-3)
        mass = w.sum(-1) / w.shape[-1]
        return self.net(torch.cat([h.mean(-1), h.amax(-1), attended, appearance, mass], 1))


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
        return self.sample_with_typicality(n, generator, temperature)[0]

    @torch.no_grad()
    def sample_with_typicality(self, n: int, generator: torch.Generator | None = None,
                               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, I)`` identity vectors and ``(n,)`` Mahalanobis radii of their latents under the sampling
        Gaussian (small = typical: near the centre of the fitted training-identity density)."""
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.prior_mean.device)
        z = self.prior_mean + temperature * eps @ self.prior_scale_tril.T
        return self.decode(z), temperature * eps.norm(dim=1)
