"""Encoder and generator that split an image into medical, identity and other feature vectors.

Shapes use ``B`` for the batch, ``S`` for the image side (a power of two, 64 and up) and ``D`` for
``spatial_dims`` (2 for radiographs; the blocks are dimension-agnostic).

The generator is *structured*: it renders a canonical-pose anatomy from the identity vector, adds a
finding residual rendered from the medical and identity vectors, then applies the acquisition (an
affine pose and a pointwise intensity curve) decoded from the other vector. Swapping the medical
vector can therefore only change the finding residual, which keeps counterfactual edits local.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers import AffineTransform
from torch import nn

__all__ = ["DisentanglerConfig", "Encoder", "Features", "Generator"]


@dataclass
class DisentanglerConfig:
    """Architecture hyper-parameters shared by the encoder and the generator."""

    spatial_dims: int = 2
    image_size: int = 64
    medical_dim: int = 16
    identity_dim: int = 64
    other_dim: int = 16
    channels: Sequence[int] = field(default_factory=lambda: (16, 32, 64, 128))
    decoder_channels: Sequence[int] = field(default_factory=lambda: (128, 64, 32, 16))
    start_size: int = 4
    subunits: int = 1
    norm: str | tuple = ("group", {"num_groups": 8})
    act: str | tuple = ("leakyrelu", {"negative_slope": 0.2})

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {self.image_size}")
        levels = int(math.log2(self.image_size // self.start_size))
        self.channels = _fit_levels(tuple(self.channels), levels, grow=True)
        self.decoder_channels = _fit_levels(tuple(self.decoder_channels), levels, grow=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["decoder_channels"] = list(self.channels), list(self.decoder_channels)
        return d


def _fit_levels(channels: tuple[int, ...], levels: int, grow: bool) -> tuple[int, ...]:
    """Repeat the smallest (or largest) channel count so there is one entry per resolution level."""
    if len(channels) >= levels:
        return channels[-levels:] if grow else channels[:levels]
    pad = (channels[0],) * (levels - len(channels))
    return pad + channels if grow else channels + (channels[-1],) * (levels - len(channels))


@dataclass
class Features:
    """The three feature vectors of a batch: ``medical (B, M)``, ``identity (B, I)``, ``other (B, O)``."""

    medical: torch.Tensor
    identity: torch.Tensor
    other: torch.Tensor

    def replace(self, **slots: torch.Tensor) -> Features:
        return Features(**{**self.__dict__, **slots})

    def detach(self) -> Features:
        return Features(self.medical.detach(), self.identity.detach(), self.other.detach())

    def index(self, idx: torch.Tensor) -> Features:
        return Features(self.medical[idx], self.identity[idx], self.other[idx])


class Encoder(nn.Module):
    """``(B, 1, S, …) -> Features``: strided residual units down to ``start_size``, then linear heads."""

    def __init__(self, cfg: DisentanglerConfig, in_channels: int = 1) -> None:
        super().__init__()
        d = cfg.spatial_dims
        layers: list[nn.Module] = [
            Convolution(d, in_channels, cfg.channels[0], kernel_size=3, act=cfg.act, norm=cfg.norm)
        ]
        prev = cfg.channels[0]
        for ch in cfg.channels:
            layers.append(ResidualUnit(d, prev, ch, strides=2, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = ch
        self.features = nn.Sequential(*layers)
        flat = prev * cfg.start_size**d
        self.medical = nn.Linear(flat, cfg.medical_dim)
        self.identity = nn.Linear(flat, cfg.identity_dim)
        self.other = nn.Linear(flat, cfg.other_dim)

    def forward(self, x: torch.Tensor) -> Features:
        h = torch.flatten(self.features(x), 1)
        return Features(self.medical(h), self.identity(h), self.other(h))


class VectorDecoder(nn.Module):
    """``(B, F) -> (B, C_out, S, …)``: a linear map to a ``start_size`` grid, then upsampling residual units."""

    def __init__(self, cfg: DisentanglerConfig, in_features: int, out_channels: int) -> None:
        super().__init__()
        d, ch = cfg.spatial_dims, cfg.decoder_channels
        self.shape = (ch[0],) + (cfg.start_size,) * d
        self.fc = nn.Linear(in_features, math.prod(self.shape))
        blocks: list[nn.Module] = []
        prev = ch[0]
        for c in ch:
            blocks.append(UpSample(d, prev, prev, scale_factor=2, mode="nontrainable", interp_mode="bilinear"
                                   if d == 2 else "trilinear", align_corners=False))
            blocks.append(ResidualUnit(d, prev, c, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = c
        blocks.append(Convolution(d, prev, out_channels, kernel_size=3, conv_only=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.fc(z).view(z.shape[0], *self.shape))


class Generator(nn.Module):
    """``Features -> (B, 1, S, …)`` image, and the finding residual it drew.

    ``image = intensity(warp(anatomy(identity) + finding(medical, identity), pose(other)), other)``
    """

    def __init__(self, cfg: DisentanglerConfig) -> None:
        super().__init__()
        d = cfg.spatial_dims
        self.spatial_dims = d
        self.anatomy = VectorDecoder(cfg, cfg.identity_dim, 1)
        self.finding = VectorDecoder(cfg, cfg.medical_dim + cfg.identity_dim, 1)
        self.pose = nn.Linear(cfg.other_dim, d * (d + 1))
        self.intensity = nn.Linear(cfg.other_dim, 3)
        for lin in (self.pose, self.intensity):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)
        self.register_buffer("eye", torch.eye(d, d + 1), persistent=False)

    def forward(self, f: Features, return_residual: bool = False):
        anatomy = self.anatomy(f.identity)
        residual = self.finding(torch.cat([f.medical, f.identity], 1))
        canonical = anatomy + residual
        theta = self.eye + 0.25 * torch.tanh(self.pose(f.other)).view(-1, *self.eye.shape)
        warped = self.warp(canonical, theta)
        log_gamma, gain, bias = (0.5 * torch.tanh(self.intensity(f.other))).unbind(1)
        view = (-1,) + (1,) * (warped.dim() - 1)
        positive = torch.nn.functional.softplus(warped, beta=20)
        out = (1 + gain).view(view) * (positive + 1e-4) ** torch.exp(log_gamma).view(view) + bias.view(view)
        return (out, residual) if return_residual else out
