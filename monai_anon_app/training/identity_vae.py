"""The identity generator: a VAE over identity vectors whose samples stay away from real patients.

Distances between identities are cosine distances (``1 - cos``), the geometry the identity head and
the contrastive loss shape. The novelty threshold is calibrated on *held-out* real patients: it is the
``novelty_quantile`` quantile of their distance to the nearest training patient, so an accepted
synthetic identity is at least as far from every training patient as all but that share of new
real people are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from monai_anon_app.networks import CosineClassifier, IdentityVAE, nearest_distance

__all__ = ["calibrate_novelty", "train_identity_vae"]


def calibrate_novelty(held_out: torch.Tensor, bank: torch.Tensor, quantile: float) -> dict[str, float]:
    """Threshold from held-out real identity vectors ``(N, I)`` against training identities ``(P, I)``."""
    d = nearest_distance(held_out, bank)
    return {
        "threshold": float(torch.quantile(d, quantile)),
        "quantile": quantile,
        "held_out_images": int(d.numel()),
        "held_out_nearest_median": float(d.median()),
    }


def train_identity_vae(
    identities: torch.Tensor,
    patient_bank: torch.Tensor,
    projector: nn.Module,
    identity_head: CosineClassifier,
    latent_dim: int,
    steps: int,
    margin: float,
    beta: float = 0.05,
    away_weight: float = 1.0,
    entropy_weight: float = 0.1,
    hidden: int = 128,
    seed: int = 0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> IdentityVAE:
    """Fit a VAE to per-image identity vectors ``(N, I)``; push samples past ``margin`` from ``patient_bank``
    (training-patient embeddings ``(P, E)``; ``projector`` maps identity vectors to embeddings).

    Losses: reconstruction + ``beta`` KL, plus for prior samples a hinge ``relu(margin - d_nearest)``
    (``away_weight``) and the negative entropy of the closed-set identity head (``entropy_weight``),
    so a sample is not confidently any training patient. Afterwards the sampling Gaussian is fitted to the
    encoded ``identities`` (:meth:`IdentityVAE.fit_prior`); the inference-time novelty check still rejects
    any sample too near a training identity.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = identities.mean(0), identities.std(0).clamp_min(1e-3)
    vae = IdentityVAE(identities.shape[1], latent_dim, hidden)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    head, projector = identity_head.eval(), projector.eval()
    for p in [*head.parameters(), *projector.parameters()]:
        p.requires_grad_(False)
    for step in range(steps):
        idx = torch.randint(0, len(identities), (128,), generator=g)
        x = identities[idx]
        rec, mu, logvar = vae((x - mean) / std)
        rec = rec * std + mean
        loss_rec = F.mse_loss(rec, x) / identities.var(0).mean()
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), 1))
        z = torch.randn(128, latent_dim, generator=g)
        s = vae.decode(z) * std + mean
        e = projector(s)
        away = F.relu(margin - nearest_distance(e, patient_bank)).mean()
        prob = head(e).softmax(1)
        entropy = -(prob * prob.clamp_min(1e-9).log()).sum(1).mean()
        loss = loss_rec + beta * kl + away_weight * away - entropy_weight * entropy
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step, {"rec": loss_rec.item(), "kl": kl.item(), "away": away.item(), "entropy": entropy.item()})
    vae.eval()
    for p in [*head.parameters(), *projector.parameters()]:
        p.requires_grad_(True)
    # fold the standardisation into the decoder's last layer so the saved VAE emits raw identity vectors
    with torch.no_grad():
        first, last = vae.enc[0], vae.dec[-1]
        first.bias -= first.weight @ (mean / std)
        first.weight /= std
        last.weight *= std[:, None]
        last.bias.mul_(std).add_(mean)
    vae.fit_prior(identities)
    return vae
