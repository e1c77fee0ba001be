"""A frozen finding classifier that scores the swap losses, trained on original images before the model.

A generator scored by the model's own trainable heads can satisfy them with codes its own encoder reads
but an independent judge does not. This judge is trained separately on the training images only,
frozen, and scores generated images through random augmentations
(:func:`~monai_anon_app.data.transforms.jitter`), so a generator can only please it by drawing the finding.
Its architecture (MONAI's residual ``Classifier``) differs from the evaluation's
DenseNet judges on purpose: the gap between the two is how much the generator games its own judge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import Classifier
from torch import nn

from monai_anon_app.data.transforms import jitter
from monai_anon_app.modelfolder.config import FindingJudgeConfig

__all__ = ["fit_finding_judge", "freeze", "make_finding_judge"]


def make_finding_judge(image_size: int, n_classes: int, cfg: FindingJudgeConfig, spatial_dims: int = 2) -> nn.Module:
    """``(B, 1, S, …) -> (B, n_classes)`` logits; untrained."""
    ch = tuple(cfg.channels)
    return Classifier((1,) + (image_size,) * spatial_dims, n_classes, ch, (2,) * len(ch), num_res_units=1,
                      norm="batch")


def fit_finding_judge(images: torch.Tensor, labels: torch.Tensor, n_classes: int, cfg: FindingJudgeConfig,
                      generator: torch.Generator) -> nn.Module:
    """Train on ``images (N, 1, S, S)`` with class indices ``labels (N,)``; return the net frozen in eval mode."""
    net = make_finding_judge(images.shape[-1], n_classes, cfg, images.dim() - 2)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 20), pct_start=0.1)
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(images), (cfg.batch,), generator=generator)
        loss = F.cross_entropy(net(jitter(images[idx], cfg.shift, generator)), labels[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return freeze(net)


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no gradients for the weights (gradients still flow to the inputs)."""
    net.eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    return net
