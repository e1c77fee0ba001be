"""Encoder and generator that split an image into medical, identity and other feature vectors.

Shapes use ``B`` for the batch, ``S`` for the image side (a power of two, 64 and up), ``L`` for the
latent grid side (``latent_size``, 16 by default) and ``D`` for ``spatial_dims`` (2 for radiographs;
the blocks are dimension-agnostic).

* **identity** — a coarse feature map ``(B, C_id, L, …)`` of the anatomy, passed around flattened as a
  vector ``(B, C_id·L^D)``. Keeping the anatomy on a grid (rather than squeezing it through a dense
  layer) is what lets a small CPU-trained generator reproduce sharp anatomy. A projection head turns it
  into a pose-tolerant identity *embedding* ``(B, E)`` used for the identity losses and for every
  identity distance.
* **medical** ``(B, M)`` and **other** ``(B, O)`` — plain vectors from the flattened encoder features.

The generator is structured:
``image = intensity(warp(anatomy(identity) + finding(identity, medical), pose(other)), other)``; the
encoder undoes the pose before it reads identity and medical content, so both live in a canonical
frame shared by all visits of a patient.
The finding branch sees the medical vector broadcast over the grid next to coordinate channels, so it
can draw a finding at a position the vector encodes; swapping the medical vector can only change this
additive residual, which keeps counterfactual edits local. ``other`` drives the pose (an affine warp)
and a pointwise intensity curve (gamma, gain, offset).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers import AffineTransform
from torch import nn

__all__ = [
    "DisentanglerConfig",
    "Encoder",
    "Features",
    "Generator",
    "IdentityProjector",
    "PoseHead",
    "coordinate_channels",
]


@dataclass
class DisentanglerConfig:
    """Architecture hyper-parameters shared by the encoder and the generator."""

    spatial_dims: int = 2
    image_size: int = 64
    latent_size: int = 16
    medical_dim: int = 16
    identity_channels: int = 4
    identity_embedding_dim: int = 64
    other_dim: int = 8
    channels: Sequence[int] = field(default_factory=lambda: (16, 32))
    decoder_channels: Sequence[int] = field(default_factory=lambda: (32, 16))
    global_channels: Sequence[int] = field(default_factory=lambda: (64, 64))
    subunits: int = 1
    norm: str | tuple | None = None
    act: str | tuple = ("leakyrelu", {"negative_slope": 0.2})

    def __post_init__(self) -> None:
        if self.image_size < 16 or self.image_size & (self.image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {self.image_size}")
        if self.latent_size < 2 or self.image_size % self.latent_size or self.latent_size & (self.latent_size - 1):
            raise ValueError(f"latent_size must be a power of two dividing image_size, got {self.latent_size}")
        if self.latent_size < 2 ** len(self.global_channels):
            raise ValueError("latent_size is too small for the number of global_channels levels")
        levels = self.levels
        self.channels = _fit_levels(tuple(self.channels), levels, grow=True)
        self.decoder_channels = _fit_levels(tuple(self.decoder_channels), levels, grow=False)

    @property
    def levels(self) -> int:
        """Number of ×2 resolution steps between the image and the latent grid."""
        return int(math.log2(self.image_size // self.latent_size))

    @property
    def identity_dim(self) -> int:
        """Length of the flattened identity vector."""
        return self.identity_channels * self.latent_size**self.spatial_dims

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


def coordinate_channels(batch: int, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``(B, D, *shape)`` normalised coordinates in ``[-1, 1]`` (CoordConv inputs)."""
    axes = [torch.linspace(-1, 1, n, dtype=like.dtype, device=like.device) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return grid.unsqueeze(0).expand(batch, *grid.shape)


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


class _Trunk(nn.Module):
    """``(B, 1, S, …) -> (B, C, L, …)`` grid features and ``(B, F)`` flattened global features."""

    def __init__(self, cfg: DisentanglerConfig, in_channels: int) -> None:
        super().__init__()
        d = cfg.spatial_dims
        layers: list[nn.Module] = [
            Convolution(d, in_channels + d, cfg.channels[0], kernel_size=3, act=cfg.act, norm=cfg.norm)
        ]
        prev = cfg.channels[0]
        for ch in cfg.channels:
            layers.append(ResidualUnit(d, prev, ch, strides=2, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = ch
        self.grid = nn.Sequential(*layers)
        self.grid_channels = prev
        glob: list[nn.Module] = []
        for ch in cfg.global_channels:
            glob.append(ResidualUnit(d, prev, ch, strides=2, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = ch
        self.glob = nn.Sequential(*glob)
        self.flat_features = prev * (cfg.latent_size // 2 ** len(cfg.global_channels)) ** d

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.grid(torch.cat([x, coordinate_channels(x.shape[0], x.shape[2:], x)], 1))
        return h, torch.flatten(self.glob(h), 1)


class PoseHead(nn.Module):
    """``(B, O)`` other vector -> ``(B, D, D+1)`` affine pose (identity at initialisation).

    The generator renders in a canonical frame and warps by the pose; the encoder undoes the pose
    before it reads the anatomy, so identity maps of different visits of a patient line up.
    """

    def __init__(self, cfg: DisentanglerConfig, max_offset: float = 0.25) -> None:
        super().__init__()
        d = cfg.spatial_dims
        self.linear = nn.Linear(cfg.other_dim, d * (d + 1))
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.max_offset = max_offset
        self.register_buffer("eye", torch.eye(d, d + 1), persistent=False)
        self.warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, other: torch.Tensor) -> torch.Tensor:
        return self.eye + self.max_offset * torch.tanh(self.linear(other)).view(-1, *self.eye.shape)

    @staticmethod
    def inverse(theta: torch.Tensor) -> torch.Tensor:
        """Inverse of ``(B, D, D+1)`` affine matrices."""
        a, t = theta[..., :-1], theta[..., -1:]
        a_inv = torch.linalg.inv(a)
        return torch.cat([a_inv, -a_inv @ t], -1)


class Encoder(nn.Module):
    """``(B, 1, S, …) -> Features``.

    A first trunk reads the acquisition (**other**, which sets the pose); the image is warped back to
    the canonical pose; a second trunk reads the canonical image into the **identity** grid and the
    **medical** vector.
    """

    def __init__(self, cfg: DisentanglerConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.acquisition = _Trunk(cfg, in_channels)
        self.other = nn.Linear(self.acquisition.flat_features, cfg.other_dim)
        self.pose = PoseHead(cfg)
        self.canonical = _Trunk(cfg, in_channels)
        self.identity = Convolution(cfg.spatial_dims, self.canonical.grid_channels, cfg.identity_channels,
                                    kernel_size=1, conv_only=True)
        self.medical = nn.Linear(self.canonical.flat_features, cfg.medical_dim)

    def forward(self, x: torch.Tensor) -> Features:
        _, flat = self.acquisition(x)
        other = self.other(flat)
        canonical_image = self.pose.warp(x, PoseHead.inverse(self.pose(other)))
        grid, flat = self.canonical(canonical_image)
        return Features(self.medical(flat), torch.flatten(self.identity(grid), 1), other)


class GridDecoder(nn.Module):
    """``(B, C_in, L, …) -> (B, C_out, S, …)``: upsampling residual units from the latent grid."""

    def __init__(self, cfg: DisentanglerConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        d, ch = cfg.spatial_dims, cfg.decoder_channels
        blocks: list[nn.Module] = [Convolution(d, in_channels, ch[0], kernel_size=3, act=cfg.act, norm=cfg.norm)]
        prev = ch[0]
        for c in ch:
            blocks.append(UpSample(d, prev, prev, scale_factor=2, mode="nontrainable",
                                   interp_mode="bilinear" if d == 2 else "trilinear", align_corners=False))
            blocks.append(ResidualUnit(d, prev, c, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = c
        blocks.append(Convolution(d, prev, out_channels, kernel_size=3, conv_only=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(z)


class Generator(nn.Module):
    """``Features -> (B, 1, S, …)`` image (and, on request, the finding residual it drew)."""

    def __init__(self, cfg: DisentanglerConfig) -> None:
        super().__init__()
        d = cfg.spatial_dims
        self.grid = (cfg.identity_channels,) + (cfg.latent_size,) * d
        self.anatomy = GridDecoder(cfg, cfg.identity_channels, 1)
        self.finding = GridDecoder(cfg, cfg.identity_channels + cfg.medical_dim + d, 1)
        self.pose = PoseHead(cfg)
        self.intensity = nn.Linear(cfg.other_dim, 3)
        nn.init.zeros_(self.intensity.weight)
        nn.init.zeros_(self.intensity.bias)

    def forward(self, f: Features, return_residual: bool = False):
        b = f.identity.shape[0]
        grid = f.identity.view(b, *self.grid)
        spatial = grid.shape[2:]
        medical = f.medical.view(b, -1, *([1] * len(spatial))).expand(-1, -1, *spatial)
        residual = self.finding(torch.cat([grid, medical, coordinate_channels(b, spatial, grid)], 1))
        canonical = self.pose.warp(self.anatomy(grid) + residual, self.pose(f.other))
        log_gamma, gain, bias = (0.5 * torch.tanh(self.intensity(f.other))).unbind(1)
        view = (-1,) + (1,) * (canonical.dim() - 1)
        positive = F.softplus(canonical, beta=20) + 1e-4
        out = (1 + gain).view(view) * positive ** torch.exp(log_gamma).view(view) + bias.view(view)
        return (out, residual) if return_residual else out


class IdentityProjector(nn.Module):
    """``(B, I)`` flattened identity map -> ``(B, E)`` identity embedding (distances, identity losses)."""

    def __init__(self, cfg: DisentanglerConfig, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.identity_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, cfg.identity_embedding_dim))

    def forward(self, identity: torch.Tensor) -> torch.Tensor:
        return self.net(identity)
