"""What the refiner is trained against (:mod:`pifr.train.refine`): the two-scale conditional
PatchGAN discriminator (spectral norm; Zhou et al., "Rotate-and-Render", CVPR 2020) and the pixel
terms — masked L1 (full weight on the face, a small one outside), the symmetry term and their sum."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.refiner import landmarks5
from ..models.tpgan import crop_patches
from . import losses as L


def _sn_conv(cin: int, cout: int, k: int, s: int) -> nn.Module:
    return nn.utils.spectral_norm(nn.Conv2d(cin, cout, k, s, 1))


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN on ``(image, render, mask)``: 4 stride-2/1 convs with spectral norm;
    ``forward`` returns the list of intermediate maps, logits last."""

    def __init__(self, base: int = 32, cin: int = 7) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(_sn_conv(cin, base, 4, 2), nn.LeakyReLU(0.2, True)),
            nn.Sequential(_sn_conv(base, 2 * base, 4, 2), nn.LeakyReLU(0.2, True)),
            nn.Sequential(_sn_conv(2 * base, 4 * base, 4, 2), nn.LeakyReLU(0.2, True)),
            nn.Sequential(_sn_conv(4 * base, 4 * base, 4, 1), nn.LeakyReLU(0.2, True)),
            _sn_conv(4 * base, 1, 4, 1),
        ])

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class TwoScaleDiscriminator(nn.Module):
    """Two :class:`PatchDiscriminator` s, at 128 and at 64 px (R&R's multi-scale discriminator)."""

    def __init__(self, base: int = 32) -> None:
        super().__init__()
        self.d = nn.ModuleList([PatchDiscriminator(base), PatchDiscriminator(base)])

    def forward(self, img: torch.Tensor, render: torch.Tensor, mask: torch.Tensor) -> List[List[torch.Tensor]]:
        x = torch.cat([img, render, mask * 2 - 1], 1)
        return [self.d[0](x), self.d[1](F.avg_pool2d(x, 2))]


def masked_l1(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, outside: float) -> torch.Tensor:
    """Mean absolute error weighted 1 on ``mask`` and ``outside`` beyond it (``mask`` resized to the image)."""
    if mask.shape[-1] != out.shape[-1]:
        mask = F.interpolate(mask, size=out.shape[-2:], mode="area")
    w = mask + outside * (1 - mask)
    return ((out - target).abs().mean(1, keepdim=True) * w).sum() / w.sum().clamp_min(1e-6)


def symmetry_term(img: torch.Tensor, face: torch.Tensor, yaw: torch.Tensor, max_yaw: float) -> torch.Tensor:
    """TP-GAN's symmetry loss on the pairs whose photo is within ``max_yaw`` degrees of frontal:
    mean |Laplacian(img) − its mirror| over the face and its mirror image (0 when no pair qualifies).

    Args: img ``(B, 3, 128, 128)``; face ``(B, 1, 128, 128)`` in {0, 1}; yaw ``(B,)`` degrees."""
    keep = (yaw.abs() <= max_yaw).to(img.dtype)[:, None, None, None]
    lap = L.laplacian(img)
    w = face * face.flip(3) * keep
    return ((lap - lap.flip(3)).abs().mean(1, keepdim=True) * w).sum() / w.sum().clamp_min(1.0)


def pixel_terms(out: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], outside: float) -> torch.Tensor:
    """L1 weighted 1 on the face (rendered or a hole the render left) and ``outside`` beyond, at
    128 px; for a TP-GAN refiner the mean of that and of the same at 64 and 32 px and on its local
    patches (TP-GAN's deep supervision; the 128 px output keeps half the weight, as it alone is used)."""
    t, m = b["target"], b["face"]
    main = masked_l1(out["img128"], t, m, outside)
    terms = []
    for size in (64, 32):
        if f"img{size}" in out:
            terms.append(masked_l1(out[f"img{size}"], F.interpolate(t, size=size, mode="area"), m, outside))
    if "patches" in out:
        lm5 = landmarks5(b["landmarks"])
        tp = crop_patches(t, lm5, on_grid=True)
        mp = crop_patches(m * 2 - 1, lm5, on_grid=True)
        for name, p in out["patches"].items():  # type: ignore[union-attr]
            terms.append(masked_l1(p, tp[name], (mp[name] + 1) / 2, outside))
    return 0.5 * (main + torch.stack(terms).mean()) if terms else main


#: ``format`` metadata of a travelling checkpoint (:meth:`RefineTrainer.save_checkpoint`).
