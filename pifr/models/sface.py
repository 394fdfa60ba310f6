"""SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition",
IEEE TIP 30, 2021) as published in OpenCV Zoo (``face_recognition_sface_2021dec.onnx``), in torch.

The network is a MobileNet-V1 with PReLU activations: conv 3×3 (32) → 13 depthwise-separable
blocks (depthwise 3×3 + pointwise 1×1, each followed by BN and PReLU; stride 2 at blocks 2, 4, 6
and 12) → BN → flatten (1024×7×7) → linear 50176 → 128 → BN. Written here from the ONNX graph's
layer list so that it batches and runs wherever torch does (the ONNX file has its batch fixed at 1).

Input ``(B, 3, 112, 112)`` float RGB in [0, 255], aligned to :data:`pifr.alignment.ARCFACE_112`;
the graph's own first step, ``(x − 127.5) / 128``, is part of :meth:`SFace.forward`. Output
``(B, 128)``, not normalised.
"""
from __future__ import annotations

import torch
import torch.nn as nn

#: (output channels, stride) of the 13 depthwise-separable blocks (ONNX layers conv_2 … conv_14).
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))
#: The BN epsilons of the converted MXNet graph: 1e-3 in the trunk, 2e-5 in the head.
_EPS_TRUNK, _EPS_HEAD = 1e-3, 2e-5


def _conv_bn_prelu(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=_EPS_TRUNK),
        nn.PReLU(cout),
    )


class SFace(nn.Module):
    """SFace's MobileNet-V1 recogniser; see the module docstring for shapes."""

    def __init__(self) -> None:
        super().__init__()
        layers = [_conv_bn_prelu(3, 32, 3, 1)]
        cin = 32
        for cout, stride in BLOCKS:
            layers.append(_conv_bn_prelu(cin, cin, 3, stride, groups=cin))  # depthwise
            layers.append(_conv_bn_prelu(cin, cout, 1, 1))  # pointwise
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.bn1 = nn.BatchNorm2d(cin, eps=_EPS_HEAD)
        self.fc = nn.Linear(cin * 7 * 7, 128)
        self.bn_fc = nn.BatchNorm1d(128, eps=_EPS_HEAD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) * 0.0078125
        x = self.bn1(self.trunk(x))
        return self.bn_fc(self.fc(torch.flatten(x, 1)))


def state_dict_from_onnx_arrays(arrays: "dict[str, object]") -> "dict[str, torch.Tensor]":
    """The :class:`SFace` state dict from the ONNX file's initializers (name → numpy array), for
    ``scripts/convert_weights.py``. Raises ``KeyError`` when a tensor the network needs is absent."""
    import numpy as np

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(arrays[name], dtype=np.float32))

    sd = {}
    onnx_layers = ["conv_1"] + [f"conv_{i}{part}" for i in range(2, 15) for part in ("_dw", "")]
    for idx, layer in enumerate(onnx_layers):
        sd[f"trunk.{idx}.0.weight"] = t(f"{layer}_conv2d_weight")
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_var")):
            sd[f"trunk.{idx}.1.{ours}"] = t(f"{layer}_batchnorm_{theirs}")
        sd[f"trunk.{idx}.2.weight"] = t(f"{layer}_relu_gamma").reshape(-1)
    for ours, theirs in (("bn1", "bn1"), ("bn_fc", "fc1")):
        for a, b in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_var")):
            sd[f"{ours}.{a}"] = t(f"{theirs}_{b}")
    sd["fc.weight"] = t("pre_fc1_weight")
    sd["fc.bias"] = t("pre_fc1_bias")
    for k in [k for k in sd if k.endswith("running_mean")]:  # a torch BN's counter (unused in eval)
        sd[k.replace("running_mean", "num_batches_tracked")] = torch.zeros((), dtype=torch.long)
    return sd
