"""3DDFA_V2 pose/shape regressor (Guo et al., ECCV 2020): MobileNet-V1 ×0.5 → 62 3DMM parameters.

Input ``(B, 3, 120, 120)`` **BGR** crop normalised ``(x - 127.5) / 128`` (the weights' contract);
the crop is the square ROI derived from a face box (:func:`roi_from_bbox`). Output: 62 parameters,
de-standardised with the stored mean/std: 12 for the 3×4 affine camera, 40 shape, 10 expression.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn


class _DW(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn_dw(self.conv_dw(x)))
        return torch.relu(self.bn_sep(self.conv_sep(x)))


class TDDFAMobileNet(nn.Module):
    def __init__(self, widen: float = 0.5, num_params: int = 62) -> None:
        super().__init__()
        c = lambda n: int(n * widen)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(32), 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        spec = [
            ("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
            ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2), ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1),
            ("dw5_3", 512, 512, 1), ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
            ("dw6", 1024, 1024, 1),
        ]
        self._order = [s[0] for s in spec]
        for name, a, b, s in spec:
            setattr(self, name, _DW(c(a), c(b), s))
        self.fc_param = nn.Linear(c(1024), num_params)
        self.register_buffer("param_mean", torch.zeros(num_params))
        self.register_buffer("param_std", torch.ones(num_params))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 3, 120, 120)`` BGR float in [0, 255] → ``(B, 62)`` de-standardised 3DMM parameters."""
        x = (x - 127.5) / 128.0
        x = torch.relu(self.bn1(self.conv1(x)))
        for name in self._order:
            x = getattr(self, name)(x)
        x = self.fc_param(x.mean(dim=(2, 3)))
        return x * self.param_std + self.param_mean


def roi_from_bbox(bbox: Sequence[float]) -> Tuple[float, float, float, float]:
    """3DDFA_V2's square crop around a face box: 1.58× the mean side, shifted down 0.14×."""
    x1, y1, x2, y2 = [float(v) for v in bbox[:4]]
    old = (x2 - x1 + y2 - y1) / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + old * 0.14
    size = int(old * 1.58)
    return cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2


def pose_from_params(params: np.ndarray) -> Tuple[float, float, float]:
    """Yaw, pitch, roll in degrees from the 12 camera parameters (3DDFA's convention)."""
    p = np.asarray(params[:12], np.float64).reshape(3, 4)
    r1, r2 = p[0, :3], p[1, :3]
    r1 = r1 / np.linalg.norm(r1)
    r2 = r2 / np.linalg.norm(r2)
    r = np.stack([r1, r2, np.cross(r1, r2)])
    if r[2, 0] > 0.998:
        yaw, pitch, roll = math.pi / 2, math.atan2(-r[0, 1], -r[0, 2]), 0.0
    elif r[2, 0] < -0.998:
        yaw, pitch, roll = -math.pi / 2, math.atan2(r[0, 1], r[0, 2]), 0.0
    else:
        yaw = math.asin(r[2, 0])
        c = math.cos(yaw)
        pitch = math.atan2(r[2, 1] / c, r[2, 2] / c)
        roll = math.atan2(r[1, 0] / c, r[0, 0] / c)
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)
