"""Losses of the disentanglement model.

The central one is :func:`swap_consistency`: regenerate an image from vectors taken from three
different sources, re-encode it, and ask each re-encoded vector to come back as the vector *of the
source it was taken from*. (The paper's public code compares the swapped slot with the original
image's vector, which rewards a generator that ignores the swap.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_anon_app.networks import Features

__all__ = [
    "SLOTS",
    "hinge_d_loss",
    "hinge_g_loss",
    "mask_loss",
    "normalised_mse",
    "random_crops",
    "supervised_contrastive",
    "swap_consistency",
    "swap_targets",
    "weighted_l1",
]

SLOTS = ("medical", "identity", "other")


def normalised_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE divided by the target's per-dimension batch variance: invariant to the vectors' scale.

    The target is treated as a constant, so the encoder cannot lower the loss by shrinking its vectors.
    """
    target = target.detach()
    var = target.var(0, unbiased=False).mean().clamp_min(1e-4) if target.shape[0] > 1 else 1.0
    return F.mse_loss(pred, target) / var


def swap_targets(f: Features, perms: dict[str, torch.Tensor]) -> Features:
    """The features of the mixed image: slot ``s`` comes from ``f`` permuted by ``perms[s]``."""
    return Features(**{s: getattr(f, s)[perms[s]] for s in SLOTS})


def swap_consistency(re_encoded: Features, target: Features) -> dict[str, torch.Tensor]:
    """Per-slot :func:`normalised_mse` between re-encoded vectors and the vectors they were made from."""
    return {s: normalised_mse(getattr(re_encoded, s), getattr(target, s)) for s in SLOTS}


def supervised_contrastive(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on ``(B, E)`` embeddings with ``(B,)`` labels.

    Pulls together images of the same patient and pushes apart other patients; it needs batches with
    several images per patient (see :class:`~monai_anon_app.data.datasets.PatientBatchSampler`).
    """
    z = F.normalize(embeddings, dim=1)
    sim = z @ z.t() / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, -1e9)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    n_pos = pos.sum(1)
    valid = n_pos > 0
    if not valid.any():
        return embeddings.sum() * 0
    loss = -(log_prob * pos).sum(1)[valid] / n_pos[valid]
    return loss.mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment ``(B, C, S, S)`` for the discriminator: one random ``size × size`` crop per image."""
    b, _, h, w = x.shape
    ys = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return torch.stack([x[i, :, y: y + size, x0: x0 + size] for i, (y, x0) in enumerate(zip(ys, xs))])


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 with a per-pixel ``weight`` (broadcast to ``pred``), normalised by the total weight."""
    weight = weight.expand_as(pred)
    return ((pred - target).abs() * weight).sum() / weight.sum()


def mask_loss(drawn: torch.Tensor, truth: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice between a drawn finding mask and a reference mask, both
    ``(B, 1, S, …)`` in ``[0, 1]``. Dice is taken over the images that have a finding only (an empty
    reference has no overlap to ask for; the cross-entropy alone keeps its mask empty)."""
    drawn = drawn.clamp(eps, 1 - eps)
    bce = F.binary_cross_entropy(drawn, truth)
    dims = tuple(range(1, truth.dim()))
    has = truth.flatten(1).amax(1) > 0.05
    if not has.any():
        return bce
    inter = (drawn * truth).sum(dims)[has]
    dice = 1 - (2 * inter + 1) / (drawn.sum(dims)[has] + truth.sum(dims)[has] + 1)
    return bce + dice.mean()
