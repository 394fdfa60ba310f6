"""MobileFaceNet (Chen et al., CCBR 2018) in two published weight layouts.

:class:`MobileFaceNet` — the foamliu/MobileFaceNet weights (MS1M): input ``(B, 3, 112, 112)`` RGB
normalised with ImageNet mean/std (the weights' training transform), aligned to
:data:`pifr.alignment.ARCFACE_112`; ReLU6 activations, global depthwise 7×7.

:class:`MobileFaceNetPReLU` — the paper's own layout, as in the Xiaoccer/MobileFaceNet_Pytorch
weights (CASIA-WebFace): PReLU activations, a 112×96 input (the SphereFace crop, which is the
ArcFace 112 crop without its outer 8 columns each side), ``(x − 127.5) / 128``, global
depthwise 7×6.

Both: conv 3×3/2 (64) → depthwise 64 → 15 inverted residuals (t, c, n, s = 2,64,5,2 /
4,128,1,2 / 2,128,6,1 / 4,128,1,2 / 2,128,2,1) → 1×1 512 → global depthwise → 1×1 128 → BN;
output ``(B, 128)`` (unnormalised).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The inverted-residual stages (expansion t, channels c, repeats n, first stride s), both layouts.
BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))
#: Indices of the blocks whose outputs :meth:`feature_maps` returns as ``s1``, ``s2``, ``s3``.
_TAPS = (4, 11, 14)


def _bottleneck_stack(block: Callable[[int, int, int, int], nn.Module]) -> Tuple[nn.Sequential, int]:
    """The 15 inverted residuals of :data:`BOTTLENECKS`, each ``block(cin, cout, stride, expand)``,
    and their output channels."""
    layers, cin = [], 64
    for t, c, n, s in BOTTLENECKS:
        for i in range(n):
            layers.append(block(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*layers), cin


def _run_tapped(blocks: nn.Sequential, x: torch.Tensor, out: Dict[str, torch.Tensor]) -> torch.Tensor:
    """``x`` through ``blocks``, storing the outputs of the :data:`_TAPS` blocks in ``out`` as ``s1…s3``."""
    for i, block in enumerate(blocks):
        x = block(x)
        if i in _TAPS:
            out[f"s{len(out) + 1}"] = x
    return x


def _conv_bn_relu6(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(self.bn2(self.pointwise(x)))


class _GlobalDepthwise(nn.Module):
    def __init__(self, channels: int, k: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, k, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.depthwise(x))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv_bn_relu6(cin, hidden, k=1),
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu6(3, 64, stride=2)
        self.dw_conv = _DepthwiseSeparable(64, 64)
        self.features, cin = _bottleneck_stack(_InvertedResidual)
        self.conv2 = _conv_bn_relu6(cin, 512, k=1)
        self.gdconv = _GlobalDepthwise(512, 7)
        self.conv3 = nn.Conv2d(512, embedding_size, 1)
        self.bn = nn.BatchNorm2d(embedding_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def feature_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(B, 3, 112, 112)`` RGB in [0, 255]. Returns intermediate maps and ``embedding``."""
        x = (x - self.mean) / self.std
        x = self.dw_conv(self.conv1(x))
        out: Dict[str, torch.Tensor] = {}
        x = _run_tapped(self.features, x, out)
        x = self.bn(self.conv3(self.gdconv(self.conv2(x))))
        out["embedding"] = x.flatten(1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in [0, 255] → ``(B, 128)``."""
        return self.feature_maps(x)["embedding"]


class _ConvBNPReLU(nn.Module):
    """conv → BN (→ PReLU unless ``linear``), module names as in the Xiaoccer weights."""

    def __init__(self, cin: int, cout: int, k, stride: int = 1, groups: int = 1, linear: bool = False) -> None:
        super().__init__()
        pad = 1 if k == 3 else 0  # 3×3 keeps the size; 1×1 and the global 7×6 need no padding
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class _InvertedResidualPReLU(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.PReLU(hidden),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class MobileFaceNetPReLU(nn.Module):
    """The paper's MobileFaceNet (PReLU, 112×96 input) in the Xiaoccer/MobileFaceNet_Pytorch layout.

    Takes the ArcFace-aligned 112×112 crop, like :class:`MobileFaceNet`, and keeps its middle 96
    columns: the SphereFace 112×96 template these weights were trained on is the ArcFace one
    shifted 8 px left (:data:`pifr.alignment.ARCFACE_112`)."""

    #: Columns of the 112 crop the network sees (the SphereFace 112×96 crop).
    COLUMNS: Tuple[int, int] = (8, 104)

    def __init__(self, embedding_size: int = 128) -> None:
        super().__init__()
        self.conv1 = _ConvBNPReLU(3, 64, 3, 2)
        self.dw_conv1 = _ConvBNPReLU(64, 64, 3, groups=64)
        self.blocks, cin = _bottleneck_stack(_InvertedResidualPReLU)
        self.conv2 = _ConvBNPReLU(cin, 512, 1)
        self.linear7 = _ConvBNPReLU(512, 512, (7, 6), groups=512, linear=True)
        self.linear1 = _ConvBNPReLU(512, embedding_size, 1, linear=True)

    def feature_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(B, 3, 112, 112)`` RGB in [0, 255], ArcFace-aligned. Returns intermediate maps and ``embedding``."""
        a, b = self.COLUMNS
        x = (x[..., a:b] - 127.5) / 128.0
        x = self.dw_conv1(self.conv1(x))
        out: Dict[str, torch.Tensor] = {}
        x = _run_tapped(self.blocks, x, out)
        out["embedding"] = self.linear1(self.linear7(self.conv2(x))).flatten(1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 3, 112, 112)`` RGB in [0, 255] → ``(B, 128)``."""
        return self.feature_maps(x)["embedding"]
