"""Distances between identity vectors: cosine distance (``1 - cos``), the geometry the identity head and the
contrastive loss shape."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_distance", "nearest_distance"]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, I)``, ``(M, I)`` -> ``(N, M)`` pairwise ``1 - cos``."""
    return 1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()


def nearest_distance(a: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``(N,)`` distance of each row of ``a`` to its nearest row of ``bank``."""
    return cosine_distance(a, bank).min(1).values
