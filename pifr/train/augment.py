"""Photometric augmentation of training pairs, against the gap between renders and real profiles.

A render carries the frontal photo's colours and light onto a turned head: its near cheek is lit
as it was when it faced the camera, its resampled texture is smoother than a photo, and every
render of a person shares one white balance with its target. Real profiles differ in all three.
:func:`photometric` perturbs a batch so the generator cannot rely on them:

- on input and target alike (the generator should keep a face's colours, so both move together):
  contrast, brightness, saturation and a per-channel gain (white balance);
- on the input only (nuisances the frontal output should not have): a directional light ramp
  across the face, Gaussian blur and pixel noise.

Everything is drawn from a ``torch.Generator``, so a seeded run (and its resumption at a given
step) draws the same perturbations. Images are (B, 3, H, W) tensors in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) * (hi - lo) + lo).to(device)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (pixels) per sample; sigma 0 leaves a sample as it is."""
    radius = 4
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 2r+1)
    b, c, h, w = x.shape
    # Grouped convolution: every (sample, channel) plane gets its sample's kernel.
    kk = k.repeat_interleave(c, 0)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kk[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kk[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def photometric(x: torch.Tensor, y: torch.Tensor, g: torch.Generator,
                strength: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Perturb a batch of (input, target) pairs.

    Args:
        x, y: (B, 3, H, W) inputs and targets in [-1, 1].
        g: the random source (a CPU generator; draws are moved to ``x``'s device).
        strength: scales every range below; 0 returns the batch unchanged. At 1: contrast ×e^±0.25,
            brightness ±0.1 (of the [-1, 1] range), saturation ×e^±0.3, channel gains ×e^±0.08; on
            the input, a light ramp from ×(1−0.35) to ×(1+0.35) across the face at an angle within
            ±30° of horizontal, blur σ up to 1.5 px on half the samples, noise σ up to 0.03.

    Returns:
        (x', y'), clamped to [-1, 1].
    """
    if strength <= 0:
        return x, y
    b, dev, s = x.shape[0], x.device, float(strength)
    contrast = torch.exp(_uniform(b, -0.25 * s, 0.25 * s, g, dev))[:, None, None, None]
    bright = _uniform(b, -0.1 * s, 0.1 * s, g, dev)[:, None, None, None]
    sat = torch.exp(_uniform(b, -0.3 * s, 0.3 * s, g, dev))[:, None, None, None]
    gains = torch.exp((torch.rand(b, 3, generator=g) * 2 - 1) * 0.08 * s).to(dev)[:, :, None, None]

    def shared(im: torch.Tensor) -> torch.Tensor:
        mean = im.mean(dim=(1, 2, 3), keepdim=True)
        im = (im - mean) * contrast + mean + bright
        grey = im.mean(dim=1, keepdim=True)
        im = grey + (im - grey) * sat
        return ((im + 1) * gains) - 1  # gains act on intensity, not on the signed range

    x, y = shared(x), shared(y)
    # A light from one side: a linear gain across the face, as real profiles are lit unlike renders.
    h, w = x.shape[-2:]
    theta = _uniform(b, -math.pi / 6, math.pi / 6, g, dev)
    amp = _uniform(b, -0.35 * s, 0.35 * s, g, dev)
    vv, uu = torch.meshgrid(torch.linspace(-1, 1, h, device=dev), torch.linspace(-1, 1, w, device=dev), indexing="ij")
    ramp = torch.cos(theta)[:, None, None] * uu + torch.sin(theta)[:, None, None] * vv
    x = (x + 1) * (1 + amp[:, None, None] * ramp)[:, None] - 1
    sigma = _uniform(b, 0.0, 1.5 * s, g, dev) * (torch.rand(b, generator=g) < 0.5).to(dev)
    x = _blur(x, sigma)
    noise = _uniform(b, 0.0, 0.03 * s, g, dev)[:, None, None, None]
    x = x + noise * torch.randn(x.shape, generator=g).to(dev)
    return x.clamp(-1, 1), y.clamp(-1, 1)
