"""RetinaFace with a MobileNet-0.25 backbone (Deng et al., CVPR 2020), in the layout of the
biubug6/Pytorch_Retinaface weights (MIT).

Input ``(B, 3, H, W)`` **BGR** float with the per-channel means (104, 117, 123) subtracted.
Three FPN levels (strides 8, 16, 32) with SSH context modules, two anchors per cell
(min sizes 16/32, 64/128, 256/512). Outputs per anchor: 2 class logits, 4 box offsets,
10 landmark offsets, decoded by :func:`decode` with variances (0.1, 0.2).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

BGR_MEAN = (104.0, 117.0, 123.0)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)


def _conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3, leaky: float = 0.0, act: bool = True) -> nn.Sequential:
    layers: List[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.LeakyReLU(leaky, inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(leaky, inplace=True),
    )


class _Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, 2, leaky=0.1), _conv_dw(8, 16, 1), _conv_dw(16, 32, 2),
            _conv_dw(32, 32, 1), _conv_dw(32, 64, 2), _conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2), *[_conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2), _conv_dw(256, 256, 1))


class _FPN(nn.Module):
    def __init__(self, ins: Tuple[int, int, int], out: int = 64) -> None:
        super().__init__()
        self.output1 = _conv_bn(ins[0], out, k=1, leaky=0.1)
        self.output2 = _conv_bn(ins[1], out, k=1, leaky=0.1)
        self.output3 = _conv_bn(ins[2], out, k=1, leaky=0.1)
        self.merge1 = _conv_bn(out, out, leaky=0.1)
        self.merge2 = _conv_bn(out, out, leaky=0.1)

    def forward(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> List[torch.Tensor]:
        o1, o2, o3 = self.output1(c1), self.output2(c2), self.output3(c3)
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _SSH(nn.Module):
    def __init__(self, cin: int = 64, cout: int = 64) -> None:
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, act=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4, leaky=0.1)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4, leaky=0.1)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7_2 = self.conv7X7_2(c5_1)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), self.conv7x7_3(c7_2)], 1))


class _Head(nn.Module):
    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Backbone()
        self.fpn = _FPN((64, 128, 256))
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.ClassHead = nn.ModuleList([_Head(64, 2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([_Head(64, 4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([_Head(64, 10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x``: ``(B, 3, H, W)`` mean-subtracted BGR → (loc ``(B, A, 4)``, scores ``(B, A)``, landmarks ``(B, A, 10)``)."""
        c1 = self.body.stage1(x)
        c2 = self.body.stage2(c1)
        c3 = self.body.stage3(c2)
        feats = [s(f) for s, f in zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(c1, c2, c3))]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], 1)
        cls = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], 1)
        ldm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], 1)
        return loc, F.softmax(cls, dim=-1)[..., 1], ldm


def priors(h: int, w: int, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Anchors ``(A, 4)`` as (cx, cy, w, h) normalised by image size, in the network's output order."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(h / step), math.ceil(w / step)
        ys, xs = torch.meshgrid(torch.arange(fh, device=device), torch.arange(fw, device=device), indexing="ij")
        cx = ((xs.reshape(-1).float() + 0.5) * step / w)
        cy = ((ys.reshape(-1).float() + 0.5) * step / h)
        per = [torch.stack([cx, cy, torch.full_like(cx, s / w), torch.full_like(cx, s / h)], 1) for s in sizes]
        out.append(torch.stack(per, 1).reshape(-1, 4))
    return torch.cat(out, 0)


def decode(loc: torch.Tensor, ldm: torch.Tensor, pri: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(A, 4)`` x1y1x2y2 and landmarks ``(A, 5, 2)``, both normalised to [0, 1] image units."""
    v0, v1 = VARIANCES
    centre = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
    size = pri[:, 2:] * torch.exp(loc[:, 2:] * v1)
    boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
    lm = pri[:, None, :2] + ldm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
    return boxes, lm
