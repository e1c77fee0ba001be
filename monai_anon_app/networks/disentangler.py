"""Encoder and generator that split an image into medical, identity and other feature vectors.

Shapes use ``B`` for the batch, ``S`` for the image side (a power of two, 64 and up), ``L`` for the
latent grid side (``latent_size``, 16 by default), ``R`` for the finding-mask side
(``finding_mask_size``) and ``D`` for ``spatial_dims`` (2 for radiographs; the blocks are
dimension-agnostic).

* **identity** — a coarse feature map ``(B, C_id, L, …)`` of the anatomy, passed around flattened as a
  vector ``(B, C_id·L^D)``. A projection head turns it into a pose-tolerant identity *embedding*
  ``(B, E)`` used for the identity losses and for every identity distance.
* **medical** ``(B, R^D + A)`` — the finding's *where* and *what*: a soft finding mask ``(B, 1, R, …)``
  in the pose-normalised frame, flattened, followed by a small appearance code ``(B, A)`` read by
  attention pooling over the mask. A global vector cannot say where a nodule is and lets the finding
  slip into the identity grid; a mask can, and an empty mask *is* the statement "no finding".
* **other** ``(B, O)`` — acquisition only: a rigid pose with bounded isotropic scale and a pointwise
  intensity curve, so body shape has nowhere to ride in it.

The generator composes
``image = intensity(warp(anatomy(identity) + lungs(identity) ⊙ up(mask) · amplitude(appearance), pose))``:
swapping the identity keeps the finding where it was, inside the new patient's lungs; swapping the
medical vector edits only where the masks are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers import AffineTransform
from monai.networks.nets import UNet
from torch import nn

__all__ = [
    "DisentanglerConfig",
    "Encoder",
    "Features",
    "FindingEncoder",
    "Generator",
    "IdentityProjector",
    "PoseHead",
    "Rendering",
    "coordinate_channels",
    "split_medical",
]


@dataclass
class DisentanglerConfig:
    """Architecture hyper-parameters shared by the encoder and the generator."""

    spatial_dims: int = 2
    image_size: int = 64
    latent_size: int = 16
    finding_mask_size: int = 16
    appearance_dim: int = 2
    finding_channels: Sequence[int] = field(default_factory=lambda: (16, 32, 64))
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
        if self.image_size % self.finding_mask_size or self.finding_mask_size & (self.finding_mask_size - 1):
            raise ValueError(f"finding_mask_size must be a power of two dividing image_size, got "
                             f"{self.finding_mask_size}")
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
    def mask_dim(self) -> int:
        """Number of finding-mask cells ``R^D``."""
        return self.finding_mask_size**self.spatial_dims

    @property
    def medical_dim(self) -> int:
        """Length of the medical vector: the flattened finding mask and the appearance code."""
        return self.mask_dim + self.appearance_dim

    @property
    def identity_dim(self) -> int:
        """Length of the flattened identity vector."""
        return self.identity_channels * self.latent_size**self.spatial_dims

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("channels", "decoder_channels", "global_channels", "finding_channels"):
            d[k] = list(d[k])
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
    """``(B, 1, S, …) -> (B, C, L, …)`` grid features and ``(B, F)`` flattened global features (the grid
    itself, flattened, when ``with_global`` is off)."""

    def __init__(self, cfg: DisentanglerConfig, in_channels: int, with_global: bool = True) -> None:
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
        for ch in cfg.global_channels if with_global else ():
            glob.append(ResidualUnit(d, prev, ch, strides=2, subunits=cfg.subunits, act=cfg.act, norm=cfg.norm))
            prev = ch
        self.glob = nn.Sequential(*glob)
        self.flat_features = prev * (cfg.latent_size // 2 ** len(glob)) ** d

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.grid(torch.cat([x, coordinate_channels(x.shape[0], x.shape[2:], x)], 1))
        return h, torch.flatten(self.glob(h), 1)


class PoseHead(nn.Module):
    """``(B, O)`` other vector -> ``(B, D, D+1)`` pose: a rotation, a bounded isotropic scale and a bounded
    shift (the identity transform at initialisation).

    Only rigid motion and isotropic scale are expressible, so the pose cannot carry body shape (a free
    affine map could stretch one patient into another). The generator renders in a canonical frame and
    warps by the pose; the encoder undoes it before it reads anatomy and finding, so the identity maps and
    finding masks of different visits of a patient line up.
    """

    def __init__(self, cfg: DisentanglerConfig, max_angle: float = 0.3, max_log_scale: float = 0.15,
                 max_shift: float = 0.2) -> None:
        super().__init__()
        d = cfg.spatial_dims
        self.n_angles = d * (d - 1) // 2
        self.linear = nn.Linear(cfg.other_dim, self.n_angles + 1 + d)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.max_angle, self.max_log_scale, self.max_shift = max_angle, max_log_scale, max_shift
        self.register_buffer("triu", torch.triu_indices(d, d, 1), persistent=False)
        self.warp = AffineTransform(normalized=True, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, other: torch.Tensor) -> torch.Tensor:
        p = torch.tanh(self.linear(other))
        angles, log_scale, shift = p.split([self.n_angles, 1, p.shape[1] - self.n_angles - 1], 1)
        d = shift.shape[1]
        skew = other.new_zeros(other.shape[0], d, d)
        skew[:, self.triu[0], self.triu[1]] = self.max_angle * angles
        rotation = torch.linalg.matrix_exp(skew - skew.transpose(1, 2))
        scale = torch.exp(self.max_log_scale * log_scale).unsqueeze(-1)
        return torch.cat([scale * rotation, self.max_shift * shift.unsqueeze(-1)], -1)

    @staticmethod
    def inverse(theta: torch.Tensor) -> torch.Tensor:
        """Inverse of ``(B, D, D+1)`` affine matrices."""
        a, t = theta[..., :-1], theta[..., -1:]
        a_inv = torch.linalg.inv(a)
        return torch.cat([a_inv, -a_inv @ t], -1)


class FindingEncoder(nn.Module):
    """Canonical image ``(B, 1, S, …)`` -> medical vector ``(B, R^D + A)``.

    A small MONAI U-Net predicts per-pixel finding logits and features; the mask is the per-cell mean of
    the sigmoid over ``R^D`` cells and the appearance code is a linear map of the features pooled with the
    mask as attention weights.
    """

    def __init__(self, cfg: DisentanglerConfig, in_channels: int = 1) -> None:
        super().__init__()
        d = cfg.spatial_dims
        features = cfg.finding_channels[0]
        self.unet = UNet(d, in_channels + d, 1 + features, channels=tuple(cfg.finding_channels),
                         strides=(2,) * (len(cfg.finding_channels) - 1), num_res_units=1, act=cfg.act,
                         norm="instance")
        self.appearance = nn.Linear(features, cfg.appearance_dim)
        self.cells = cfg.image_size // cfg.finding_mask_size
        self.pool = F.avg_pool3d if d == 3 else F.avg_pool2d

    def forward(self, canonical: torch.Tensor) -> torch.Tensor:
        out = self.unet(torch.cat([canonical, coordinate_channels(canonical.shape[0], canonical.shape[2:],
                                                                  canonical)], 1))
        prob, feats = torch.sigmoid(out[:, :1]), out[:, 1:]
        mask = self.pool(prob, self.cells)
        weights = prob.flatten(2)
        pooled = (feats.flatten(2) * weights).sum(-1) / (weights.sum(-1) + 1.0)
        return torch.cat([mask.flatten(1), self.appearance(pooled)], 1)


def split_medical(medical: torch.Tensor, cfg: DisentanglerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, R^D + A)`` medical vectors -> finding masks ``(B, 1, R, …)`` and appearance codes ``(B, A)``."""
    mask, appearance = medical.split([cfg.mask_dim, cfg.appearance_dim], 1)
    return mask.view(-1, 1, *(cfg.finding_mask_size,) * cfg.spatial_dims), appearance


class Encoder(nn.Module):
    """``(B, 1, S, …) -> Features``.

    A first trunk reads the acquisition (**other**, which sets the pose); the image is warped back to
    the canonical pose; a second trunk reads the canonical image into the **identity** grid and a
    :class:`FindingEncoder` reads it into the **medical** vector (finding mask + appearance).
    """

    def __init__(self, cfg: DisentanglerConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.acquisition = _Trunk(cfg, in_channels)
        self.other = nn.Linear(self.acquisition.flat_features, cfg.other_dim)
        self.pose = PoseHead(cfg)
        self.canonical = _Trunk(cfg, in_channels, with_global=False)
        self.identity = Convolution(cfg.spatial_dims, self.canonical.grid_channels, cfg.identity_channels,
                                    kernel_size=1, conv_only=True)
        self.finding = FindingEncoder(cfg, in_channels)

    def forward(self, x: torch.Tensor) -> Features:
        _, flat = self.acquisition(x)
        other = self.other(flat)
        canonical_image = self.pose.warp(x, PoseHead.inverse(self.pose(other)))
        grid, _ = self.canonical(canonical_image)
        return Features(self.finding(canonical_image), torch.flatten(self.identity(grid), 1), other)


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


@dataclass
class Rendering:
    """What the generator drew: the ``image (B, 1, S, …)`` and, in the image frame, the finding layer
    ``finding (B, 1, S, …)`` (intensity it added), its soft ``mask (B, 1, S, …)`` in ``[0, 1]``, and the
    medical vector's mask before the lung gate, ``medical_mask (B, 1, S, …)`` (what the gate hides there is
    not drawn on this identity but would be on another's)."""

    image: torch.Tensor
    finding: torch.Tensor
    mask: torch.Tensor
    medical_mask: torch.Tensor


class Generator(nn.Module):
    """``Features -> (B, 1, S, …)`` image; :meth:`render` also returns the finding layer it drew."""

    def __init__(self, cfg: DisentanglerConfig) -> None:
        super().__init__()
        d = cfg.spatial_dims
        self.cfg = cfg
        self.grid = (cfg.identity_channels,) + (cfg.latent_size,) * d
        # channel 0: anatomy; channel 1: lung-field logits that gate the finding layer
        self.anatomy = GridDecoder(cfg, cfg.identity_channels, 2)
        with torch.no_grad():
            self.anatomy.blocks[-1].conv.bias[1].fill_(2.0)
        self.amplitude = nn.Linear(cfg.appearance_dim, 1)
        nn.init.zeros_(self.amplitude.weight)
        nn.init.constant_(self.amplitude.bias, -0.5)
        self.upsample = nn.Upsample(scale_factor=cfg.image_size // cfg.finding_mask_size,
                                    mode="bilinear" if d == 2 else "trilinear", align_corners=False)
        self.pose = PoseHead(cfg)
        self.intensity = nn.Linear(cfg.other_dim, 3)
        nn.init.zeros_(self.intensity.weight)
        nn.init.zeros_(self.intensity.bias)

    def render(self, f: Features) -> Rendering:
        b = f.identity.shape[0]
        anatomy, lung_logits = self.anatomy(f.identity.view(b, *self.grid)).split(1, 1)
        mask, appearance = split_medical(f.medical, self.cfg)
        mask = self.upsample(mask)
        gated = mask * torch.sigmoid(lung_logits)
        amplitude = F.softplus(self.amplitude(appearance)).view(-1, *([1] * (gated.dim() - 1)))
        theta = self.pose(f.other)
        canonical = self.pose.warp(anatomy + amplitude * gated, theta)
        log_gamma, gain, bias = (0.5 * torch.tanh(self.intensity(f.other))).unbind(1)
        view = (-1,) + (1,) * (canonical.dim() - 1)
        positive = F.softplus(canonical, beta=20) + 1e-4
        out = (1 + gain).view(view) * positive ** torch.exp(log_gamma).view(view) + bias.view(view)
        image_mask = self.pose.warp(gated, theta)
        return Rendering(out, amplitude * image_mask, image_mask, self.pose.warp(mask, theta))

    def forward(self, f: Features) -> torch.Tensor:
        return self.render(f).image


class IdentityProjector(nn.Module):
    """``(B, I)`` flattened identity map -> ``(B, E)`` identity embedding (distances, identity losses)."""

    def __init__(self, cfg: DisentanglerConfig, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.identity_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, cfg.identity_embedding_dim))

    def forward(self, identity: torch.Tensor) -> torch.Tensor:
        return self.net(identity)
