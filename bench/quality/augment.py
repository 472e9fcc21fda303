"""Label-preserving augmentation of grey MNIST digits, for a deployed model's training only.

Random affine moves (shift, rotation, a little scaling) and Simard-style elastic deformations
(Simard et al., 2003: a random displacement field per image, smoothed with a Gaussian and
scaled), composed into one sampling grid and applied with bilinear ``grid_sample``. The digits
are augmented *before* they are coloured, so the background colour, the benchmark's bias, is
left exactly as the training split drew it. Nothing here touches calibration or test data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """How far each digit may move. Shifts in pixels, rotation in degrees (both uniform in
    ±the value), scale as a relative change (uniform in ±the value); ``elastic_alpha`` is the
    displacement field's scale in pixels after smoothing with a Gaussian of ``elastic_sigma``
    pixels (0 turns elastic deformation off)."""

    shift_px: float = 2.0
    rotate_deg: float = 15.0
    scale: float = 0.1
    elastic_alpha: float = 34.0
    elastic_sigma: float = 4.0


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of [N, C, H, W] fields (zero padding, as Simard's fields)."""
    k = _gaussian_kernel(sigma)
    c, r = field.shape[1], k.numel() // 2
    field = F.conv2d(field, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(field, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def augment_digits(gray: np.ndarray, cfg: AugmentConfig, gen: torch.Generator) -> np.ndarray:
    """Randomly moved and deformed copies of ``gray`` (uint8 [N, H, W], strokes bright on a
    dark background), same shape and dtype; every draw comes from ``gen``."""
    n, h, w = gray.shape
    x = torch.as_tensor(gray, dtype=torch.float32).unsqueeze(1)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen) * 2 - 1

    angle = uniform(n) * math.radians(cfg.rotate_deg)
    scale = 1 + uniform(n) * cfg.scale
    shift = uniform(n, 2) * cfg.shift_px
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output to input coordinates in [-1, 1]; a pixel is 2 / size of that.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -shift[:, 0] * 2 / w], dim=1),
            torch.stack([sin, cos, -shift[:, 1] * 2 / h], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if cfg.elastic_alpha > 0:
        field = _smooth(uniform(n, 2, h, w), cfg.elastic_sigma) * cfg.elastic_alpha
        scale_xy = torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1)
        grid = grid + (field * scale_xy).permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round().clamp(0, 255).numpy().astype(gray.dtype)
