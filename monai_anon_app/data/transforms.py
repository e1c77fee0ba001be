"""Intensity and size transforms between an image in its own units and the model's input.

The model sees ``(1, S, S)`` images min-max scaled to ``[0, 1]``; :class:`ModelInput` remembers the
scale and the original size so a model output can be brought back to the input's units and matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ModelInput", "from_model", "jitter", "to_model"]


@dataclass
class ModelInput:
    """A model-ready image ``tensor (1, S, S)`` with the ``low``/``high`` intensities and ``shape`` it came from."""

    tensor: torch.Tensor
    low: float
    high: float
    shape: tuple[int, int]

    def restore(self, model_image: torch.Tensor | np.ndarray) -> np.ndarray:
        """Bring a model-space image ``(S, S)`` or ``(1, S, S)`` back to the input's size and units."""
        return from_model(model_image, self.low, self.high, self.shape)


def _resize(t: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resize ``(..., H, W)`` with bilinear interpolation, anti-aliased when shrinking."""
    lead = t.shape[:-2]
    t4 = t.reshape(-1, 1, *t.shape[-2:])
    out = F.interpolate(t4, size=shape, mode="bilinear", align_corners=False,
                        antialias=shape[0] < t.shape[-2] or shape[1] < t.shape[-1])
    return out.reshape(*lead, *shape)


def to_model(pixels: np.ndarray, size: int) -> ModelInput:
    """``(H, W)`` pixels in any units -> :class:`ModelInput` of side ``size`` scaled to ``[0, 1]``."""
    arr = np.asarray(pixels, dtype=np.float32)
    low, high = float(arr.min()), float(arr.max())
    scale = high - low if high > low else 1.0
    t = torch.from_numpy((arr - low) / scale)
    if t.shape != (size, size):
        t = _resize(t, (size, size))
    return ModelInput(t.unsqueeze(0).contiguous(), low, high, tuple(arr.shape))


def from_model(model_image: torch.Tensor | np.ndarray, low: float, high: float,
               shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`to_model`: ``(S, S)`` in ``[0, 1]`` -> ``shape`` in the original units (float32)."""
    t = torch.as_tensor(model_image, dtype=torch.float32).detach().cpu()
    t = t.reshape(t.shape[-2:])
    if tuple(t.shape) != tuple(shape):
        t = _resize(t, tuple(shape))
    scale = high - low if high > low else 1.0
    return (t.numpy() * scale + low).astype(np.float32)


def jitter(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Random augmentation of ``(B, C, H, W)`` images for judges: a cyclic translation by up to ``shift``
    pixels and a small gain/offset jitter, drawn per image from ``g``. Differentiable in ``x``."""
    if shift <= 0:
        return x
    b = x.shape[0]
    dy = torch.randint(-shift, shift + 1, (b,), generator=g).tolist()
    dx = torch.randint(-shift, shift + 1, (b,), generator=g).tolist()
    out = torch.stack([torch.roll(x[i], shifts=(dy[i], dx[i]), dims=(-2, -1)) for i in range(b)])
    gain = 1 + 0.1 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    offset = 0.05 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    return out * gain.to(x) + offset.to(x)
