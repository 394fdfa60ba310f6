"""facenet-pytorch's InceptionResnetV1 (Schroff et al. 2015 architecture, Szegedy et al. 2017
blocks) for user-supplied VGGFace2/CASIA weights. The architecture comes from the
``facenet-pytorch`` dependency; pifr never downloads its weights.

Input ``(B, 3, 160, 160)`` RGB in [0, 255], standardised here as ``(x - 127.5) / 128``.
Output ``(B, 512)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import DependencyError


class FaceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        try:
            from facenet_pytorch import InceptionResnetV1
        except ImportError as e:  # pragma: no cover
            raise DependencyError("facenet embedders need facenet-pytorch==2.5.3") from e
        # pretrained=None: build the architecture only; classify=False: return the 512-d embedding.
        self.net = InceptionResnetV1(pretrained=None, classify=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 127.5) / 128.0)
