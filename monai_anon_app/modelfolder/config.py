"""Training configuration, read from and written to YAML."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from monai_anon_app.data.phantoms import FINDINGS
from monai_anon_app.networks import DisentanglerConfig

__all__ = ["FindingJudgeConfig", "LossWeights", "TrainConfig", "load_config"]


@dataclass
class FindingJudgeConfig:
    """The frozen finding classifier that scores the swap losses (``training.finding_judge``)."""

    steps: int = 400
    batch: int = 32
    lr: float = 2e-3
    channels: Sequence[int] = (16, 32, 64, 64)
    shift: int = 3


@dataclass
class LossWeights:
    reconstruction: float = 1.0
    ssim: float = 1.0
    cross_visit: float = 1.0
    #: extra weight of the reconstruction L1 inside both visits' finding masks (oracle masks when the data
    #: has them, else the model's own): a nodule is ~1 % of the pixels and must not be free to get lost
    finding_focus: float = 10.0
    #: supervision of the drawn finding mask by the data's masks (ignored when the data has none)
    mask: float = 1.0
    #: the same supervision of the medical vector's own mask, before the lung gate: without it the mask may
    #: carry anatomy where the gate hides it from the reconstruction, and an identity swap lets it through
    medical_mask: float = 0.0
    medical: float = 0.2
    identity: float = 0.2
    contrastive: float = 0.2
    swap: float = 0.5
    #: identity of the re-encoded swap by the model's identity head
    cycle: float = 0.1
    #: finding of the swapped image by the frozen, separately trained finding judge
    judge: float = 0.5
    adversarial: float = 0.02
    finding_sparsity: float = 0.05
    #: adversaries that look for the finding in the identity map and the other vector
    leakage: float = 0.1
    #: adversaries that learn to tell patients apart by the medical and by the other vector, which an
    #: anonymized image keeps (0: none)
    identity_leakage: float = 0.0


@dataclass
class TrainConfig:
    """Everything ``monai-anon train`` needs; unknown keys in a YAML file are an error."""

    name: str = "phantom-cxr"
    seed: int = 0
    # data: a folder with labels.csv, or (when ``data`` is empty) a phantom cohort
    data: str | None = None
    phantom_patients: int = 200
    phantom_images_per_patient: int = 8
    phantom_seed: int = 1000
    calibration_fraction: float = 0.15
    classes: list[str] = field(default_factory=lambda: list(FINDINGS))
    model: DisentanglerConfig = field(default_factory=DisentanglerConfig)
    # optimisation
    steps: int = 3000
    patients_per_batch: int = 8
    images_per_patient: int = 4
    lr: float = 5e-4
    lr_discriminator: float = 2e-4
    adversarial_start: int = 500
    swap_start: int = 200
    swap_ramp: int = 200
    crop_fraction: float = 0.75
    #: train with the data's finding masks when it has them (false: sparsity and classification only)
    use_masks: bool = True
    judge: FindingJudgeConfig = field(default_factory=lambda: FindingJudgeConfig(steps=1200))
    weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: int = 250
    threads: int = 0
    # identity VAE
    vae_latent_dim: int = 16
    vae_hidden: int = 128
    vae_steps: int = 3000
    vae_beta: float = 0.05
    vae_away_weight: float = 1.0
    vae_entropy_weight: float = 0.1
    novelty_quantile: float = 0.05

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        d["judge"]["channels"] = list(self.judge.channels)
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        for key, kind in (("model", DisentanglerConfig), ("weights", LossWeights), ("judge", FindingJudgeConfig)):
            if key in raw:
                raw[key] = _typed(kind, raw[key], key)
        return cls(**raw)


def _typed(kind: type, raw: dict, section: str):
    """``kind(**raw)``, with an error naming unknown keys of ``section`` instead of a TypeError."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(raw or {}) - known
    if unknown:
        raise ValueError(f"unknown {section} option(s): {', '.join(sorted(unknown))}")
    return kind(**(raw or {}))


def load_config(path: str | Path | None, **overrides) -> TrainConfig:
    """Read a YAML config (or the defaults when ``path`` is None) and apply non-None ``overrides``."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a YAML mapping of training options")
    raw = {**(raw or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig.from_dict(raw)
