"""Independent judges, trained on ORIGINAL images only and sharing no weights with the model.

* :class:`Judge` ``kind="classifier"`` — a closed-set classifier (the re-identification attacker A1
  over the test patients, or the finding classifier used as the utility judge);
* :class:`Judge` ``kind="verifier"`` — an open-set verification network (attacker A2): an embedding
  trained with a supervised contrastive loss on patients disjoint from the test patients; two images
  match when the cosine similarity of their embeddings is high;
* :class:`Judge` ``kind="regressor"`` — the localiser: where a finding is, as numbers (``labels`` are
  ``(N, K)`` float targets).

All take ``(N, S, S)`` float32 images in ``[0, 1]``. The backbone is MONAI's DenseNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet
from monai.utils import set_determinism

from monai_anon_app.data.datasets import PatientBatchSampler
from monai_anon_app.data.transforms import jitter
from monai_anon_app.training.losses import supervised_contrastive

__all__ = ["Judge", "JudgeConfig"]


@dataclass
class JudgeConfig:
    steps: int = 600
    batch: int = 32
    lr: float = 2e-3
    init_features: int = 16
    growth_rate: int = 8
    block_config: Sequence[int] = (3, 3, 3)
    embedding_dim: int = 64
    shift: int = 3
    seed: int = 0


class Judge:
    """A trained judge: ``predict_proba`` for classifiers, ``embed`` for verifiers."""

    def __init__(self, kind: str, n_out: int, cfg: JudgeConfig) -> None:
        if kind not in ("classifier", "verifier", "regressor"):
            raise ValueError(f"unknown judge kind {kind!r}")
        self.kind, self.cfg = kind, cfg
        self.net = DenseNet(spatial_dims=2, in_channels=1, out_channels=n_out, init_features=cfg.init_features,
                            growth_rate=cfg.growth_rate, block_config=tuple(cfg.block_config))

    @classmethod
    def fit(cls, kind: str, images: np.ndarray, labels: Sequence, cfg: JudgeConfig | None = None,
            progress=None) -> Judge:
        """Train on ``images (N, S, S)`` with ``labels`` (class names or patient ids; ``(N, K)`` floats for a
        regressor)."""
        cfg = cfg or JudgeConfig()
        set_determinism(cfg.seed)
        if kind == "regressor":
            y = torch.as_tensor(np.asarray(labels, np.float32))
            names, n_out = [f"target{k}" for k in range(y.shape[1])], y.shape[1]
        else:
            names = sorted(set(labels))
            y = torch.tensor([names.index(v) for v in labels])
            n_out = len(names) if kind == "classifier" else cfg.embedding_dim
        judge = cls(kind, n_out, cfg)
        judge.classes = names
        x_all = torch.from_numpy(np.asarray(images, np.float32)).unsqueeze(1)
        g = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.AdamW(judge.net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
        sampler = iter(PatientBatchSampler([str(v) for v in labels], max(2, cfg.batch // 4), 4, seed=cfg.seed))
        judge.net.train()
        for _ in range(cfg.steps):
            if kind == "verifier":
                idx = torch.from_numpy(next(sampler))
            else:
                idx = torch.randint(0, len(x_all), (cfg.batch,), generator=g)
            out = judge.net(jitter(x_all[idx], cfg.shift, g))
            if kind == "classifier":
                loss = F.cross_entropy(out, y[idx], label_smoothing=0.05)
            elif kind == "regressor":
                loss = F.smooth_l1_loss(out, y[idx], beta=0.1)
            else:
                loss = supervised_contrastive(out, y[idx], temperature=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress()
        judge.net.eval()
        return judge

    @torch.no_grad()
    def _forward(self, images: np.ndarray, batch: int = 128) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(images, np.float32)).unsqueeze(1)
        return torch.cat([self.net(x[i: i + batch]) for i in range(0, len(x), batch)])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """``(N, n_classes)`` probabilities (classifiers); class order is :attr:`classes`."""
        return self._forward(images).softmax(1).numpy()

    def predict(self, images: np.ndarray) -> list:
        return [self.classes[i] for i in self.predict_proba(images).argmax(1)]

    def regress(self, images: np.ndarray) -> np.ndarray:
        """``(N, K)`` predicted targets (regressors)."""
        return self._forward(images).numpy()

    def embed(self, images: np.ndarray) -> np.ndarray:
        """``(N, E)`` unit-norm embeddings (verifiers)."""
        return F.normalize(self._forward(images), dim=1).numpy()

    def save(self, path: str | Path) -> None:
        torch.save({"state": self.net.state_dict(), "classes": list(self.classes), "kind": self.kind}, path)

    @classmethod
    def load(cls, path: str | Path, cfg: JudgeConfig) -> Judge:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        n_out = cfg.embedding_dim if raw["kind"] == "verifier" else len(raw["classes"])
        judge = cls(raw["kind"], n_out, cfg)
        judge.net.load_state_dict(raw["state"])
        judge.net.eval()
        judge.classes = raw["classes"]
        return judge
