"""Metric helpers: verification pairs and AUC, operating thresholds, top-1, minimality, synthetic-identity matches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import SSIMMetric, compute_roc_auc

__all__ = [
    "accuracy",
    "change_inside",
    "eer_threshold",
    "embedding_spread",
    "mean_ssim",
    "roc_auc",
    "synthetic_identity_matches",
    "verification_scores",
]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Binary ROC AUC of ``scores`` for ``labels`` in {0, 1}."""
    return float(compute_roc_auc(torch.as_tensor(scores, dtype=torch.float64),
                                 torch.as_tensor(labels, dtype=torch.float64)))


def accuracy(pred: Sequence, truth: Sequence) -> float:
    return float(np.mean([a == b for a, b in zip(pred, truth)])) if len(truth) else float("nan")


def verification_scores(probe_emb: np.ndarray, probe_pid: Sequence[str], probe_visit: Sequence[int],
                        gallery_emb: np.ndarray, gallery_pid: Sequence[str],
                        gallery_visit: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and genuine(1)/impostor(0) labels of every (probe, gallery) pair.

    Pairs of the same patient *and* visit are left out: a probe is never compared with the image it
    was made from, only with the patient's other visits (genuine) and other patients (impostor).
    """
    sim = probe_emb @ gallery_emb.T
    pp, gp = np.asarray(probe_pid)[:, None], np.asarray(gallery_pid)[None, :]
    same_visit = (np.asarray(probe_visit)[:, None] == np.asarray(gallery_visit)[None, :]) & (pp == gp)
    keep = ~same_visit
    return sim[keep], (pp == gp)[keep].astype(np.int64)


def eer_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold at the equal-error-rate point (false accepts = false rejects)."""
    genuine, impostor = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    candidates = np.unique(scores)
    far = 1 - np.searchsorted(impostor, candidates, side="left") / max(len(impostor), 1)
    frr = np.searchsorted(genuine, candidates, side="left") / max(len(genuine), 1)
    return float(candidates[np.argmin(np.abs(far - frr))])


def mean_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two ``(N, S, S)`` stacks in ``[0, 1]`` (7-pixel window)."""
    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)
    ta, tb = torch.from_numpy(np.asarray(a, np.float32)).unsqueeze(1), torch.from_numpy(np.asarray(b, np.float32))
    return float(metric(ta, tb.unsqueeze(1)).mean())


def change_inside(before: np.ndarray, after: np.ndarray, region: np.ndarray) -> float:
    """Share of the absolute pixel change ``|after - before|`` that lies inside ``region`` (soft mask)."""
    change = np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))
    total = change.sum()
    return float((change * region).sum() / total) if total > 0 else 1.0


def synthetic_identity_matches(synthetic: np.ndarray, real: np.ndarray, training: np.ndarray, tau: float,
                               false_match_rate: float) -> dict:
    """Do anonymized images (A2 embeddings ``synthetic``) match a training image more often than held-out real
    patients' images (``real``) do?

    A match is a training image (``training``) at or above a threshold. At A2's one-to-one equal-error
    threshold ``tau`` nearly every probe matches one of thousands of training images, real ones too, so that
    comparison cannot tell; the search threshold is the one at which only ``false_match_rate`` of the held-out
    real images match someone (a one-to-many search's operating point), and the target compares there.
    """
    synthetic_nearest, real_nearest = (synthetic @ training.T).max(1), (real @ training.T).max(1)
    search = float(np.quantile(real_nearest, 1.0 - false_match_rate))
    out = {}
    for name, threshold in (("", tau), ("search_", search)):
        synthetic_rate = float((synthetic_nearest >= threshold).mean())
        real_rate = float((real_nearest >= threshold).mean())
        out.update({f"{name}match_rate": synthetic_rate, f"{name}held_out_false_match_rate": real_rate,
                    f"{name}match_rate_minus_held_out": synthetic_rate - real_rate})
    return {**out, "search_threshold": search,
            "nearest_training_similarity_median_synthetic": float(np.median(synthetic_nearest)),
            "nearest_training_similarity_median_real": float(np.median(real_nearest)),
            "diversity_synthetic": embedding_spread(synthetic), "diversity_real": embedding_spread(real)}


def embedding_spread(embeddings: np.ndarray) -> float:
    """Diversity of unit-norm ``embeddings (N, E)``: one minus the mean cosine similarity of distinct pairs."""
    sim = embeddings @ embeddings.T
    return float(1 - sim[np.triu_indices(len(embeddings), 1)].mean())
