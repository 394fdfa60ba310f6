"""Light-CNN-29 v2 (Wu, He, Sun, Tan; IEEE TIFS 2018), in the layout of the official checkpoint.

Input ``(B, 1, 128, 128)`` grayscale in [0, 1] (the authors' contract). Max-feature-map (MFM)
activations; after each stage the map is pooled with ``max_pool(2) + avg_pool(2)``.
Output: ``(B, 256)`` feature (``fc``); the training classifier ``fc2`` is not needed for
recognition and is dropped when loading. Weights are user-supplied (not obtainable here).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F


class MFM(nn.Module):
    """Max-feature-map: a conv (or linear) layer with twice the outputs, halved by an element-wise max."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.cout = cout
        self.filter = nn.Linear(cin, 2 * cout) if linear else nn.Conv2d(cin, 2 * cout, k, stride, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.filter(x), self.cout, 1)
        return torch.maximum(a, b)


class _Group(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = MFM(cin, cin, 1, 1, 0)
        self.conv = MFM(cin, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_a(x))


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = MFM(c, c)
        self.conv2 = MFM(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class LightCNN29v2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = MFM(1, 48, 5, 1, 2)
        self.block1 = nn.Sequential(*[_Res(48) for _ in range(1)])
        self.group1 = _Group(48, 96)
        self.block2 = nn.Sequential(*[_Res(96) for _ in range(2)])
        self.group2 = _Group(96, 192)
        self.block3 = nn.Sequential(*[_Res(192) for _ in range(3)])
        self.group3 = _Group(192, 128)
        self.block4 = nn.Sequential(*[_Res(128) for _ in range(4)])
        self.group4 = _Group(128, 128)
        self.fc = nn.Linear(8 * 8 * 128, 256)

    def feature_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``(B, 1, 128, 128)`` in [0, 1] → maps ``s1``..``s4`` (64², 32², 16², 8²) and ``embedding`` (256)."""
        out: Dict[str, torch.Tensor] = {}
        x = _pool(self.conv1(x))
        x = _pool(self.group1(self.block1(x)))
        out["s1"] = x
        x = _pool(self.group2(self.block2(x)))
        out["s2"] = x
        x = self.group4(self.block4(self.group3(self.block3(x))))
        out["s3"] = x
        x = _pool(x)
        out["s4"] = x
        out["embedding"] = self.fc(x.flatten(1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x)["embedding"]


class LightCNNFromRGB(nn.Module):
    """Light-CNN behind pifr's embedder contract: RGB in [0, 255] → luminance in [0, 1] → ``net``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = LightCNN29v2()

    @staticmethod
    def _gray(x: torch.Tensor) -> torch.Tensor:
        return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]) / 255.0

    def feature_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.net.feature_maps(self._gray(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._gray(x))
