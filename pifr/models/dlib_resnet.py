"""PyTorch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``).

Architecture (dlib's ``dnn_face_recognition_ex.cpp``): 150×150 RGB chip, per-channel mean
subtracted and divided by 256; conv 7×7/2 (32) → affine → ReLU → max-pool 3×3/2; residual
stages 3×32, down+3×64, down+2×128, down+2×256, down 256; global average pool; linear
256→128 without bias. dlib pads stride-1 convolutions by k//2 and stride-2 layers by 0, and
when a residual sum's operands differ in size the smaller is zero-padded at the bottom/right
(``add_prev``), which happens in the 256-channel stages. The reference descriptor is not
normalised; dlib's own rule is "same person if Euclidean distance < 0.6".

:func:`read_dlib_dat` parses the original ``.dat`` file (dlib's serialisation: variable-length
integers, strings, raw little-endian float32 tensors) into a state dict for :class:`DlibResNet`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

#: Per-channel means (R, G, B) that dlib subtracts before dividing by 256.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)

# (channels, downsample) for each residual block, input side first.
_BLOCKS: Tuple[Tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: sum over the larger shape, the smaller operand zero-padded bottom/right."""
    if a.shape == b.shape:
        return a + b
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class Affine(nn.Module):
    """Per-channel scale and shift (dlib's ``affine`` layer: batch norm folded at test time)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.aff2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, skip))


class DlibResNet(nn.Module):
    """dlib's 29-conv face ResNet.

    Input: ``(B, 3, 150, 150)`` float RGB in [0, 255] (a dlib-style 150 chip, see
    :data:`pifr.align.DLIB_150`). Output: ``(B, 128)`` unnormalised descriptor.
    :meth:`features` also returns the intermediate maps used by the identity loss.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 32, 7, 2, 0)
        self.aff0 = Affine(32)
        blocks: List[nn.Module] = []
        cin = 32
        for cout, down in _BLOCKS:
            blocks.append(_Block(cin, cout, down))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def feature_maps(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Maps after each stage (``s1`` 35², ``s2`` 17², ``s3`` 8², ``s4`` 4², ``s5`` 2²) and ``embedding``."""
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.aff0(self.conv0(x))), 3, 2)
        out: Dict[str, torch.Tensor] = {}
        stage_ends = {2: "s1", 6: "s2", 9: "s3", 12: "s4", 13: "s5"}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in stage_ends:
                out[stage_ends[i]] = x
        out["embedding"] = self.fc(x.mean(dim=(2, 3)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(x)["embedding"]


# ---------------------------------------------------------------- .dat parsing


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.p = 0

    def int(self) -> int:
        ctrl = self.d[self.p]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or self.p + 1 + size > len(self.d):
            raise ValueError(f"bad integer at byte {self.p}")
        v = int.from_bytes(self.d[self.p + 1 : self.p + 1 + size], "little")
        self.p += 1 + size
        return -v if ctrl & 0x80 else v

    def str(self) -> str:
        n = self.int()
        s = self.d[self.p : self.p + n]
        self.p += n
        return s.decode("ascii", "replace")

    def float(self) -> float:
        mant, exp = self.int(), self.int()
        return float(np.ldexp(float(mant), exp)) if exp < 32000 else float("nan")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unexpected tensor version {version} at byte {self.p}")
        n, k, nr, nc = self.int(), self.int(), self.int(), self.int()
        count = n * k * nr * nc
        a = np.frombuffer(self.d, dtype="<f4", count=count, offset=self.p).copy()
        self.p += 4 * count
        return a.reshape(n, k, nr, nc) if count else a

    def expect(self, *names: str) -> str:
        s = self.str()
        if s not in names:
            raise ValueError(f"expected layer {names} at byte {self.p}, found {s!r}")
        return s


def read_dlib_dat(path: "str | Path") -> Dict[str, torch.Tensor]:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` into a :class:`DlibResNet` state dict.

    The file lists layers from the input side. Only the layers with parameters are
    needed; their order and shapes are checked against the architecture.

    Raises:
        ValueError: the file is not this network in dlib's format.
    """
    data = Path(path).read_bytes()
    if b"loss_metric" not in data[:32]:
        raise ValueError("not a dlib metric-loss network file (missing 'loss_metric' header)")
    r = _Reader(data)
    convs: List[Tuple[np.ndarray, np.ndarray]] = []
    affines: List[Tuple[np.ndarray, np.ndarray]] = []
    fc = None
    # Walk the layer tags in file order; each tag is a dlib string (length + ascii).
    import re

    for m in re.finditer(rb"\x01[\x04-\x0c](con_[456]|affine_2?|fc_[23])(?=[\x00-\x1f\x80-\x8f])", data):
        r.p = m.start()
        tag = r.str()
        if tag.startswith("con_"):
            params = r.tensor()
            nf, nr, nc = r.int(), r.int(), r.int()
            sy = r.int()
            r.int()  # stride_x (square kernels: equals stride_y)
            py, px = r.int(), r.int()
            flat = params.reshape(-1)
            nw = flat.size - nf
            w = flat[:nw]
            cin = nw // (nf * nr * nc)
            convs.append((w.reshape(nf, cin, nr, nc), flat[nw:]))
            want_pad = 0 if sy != 1 else nr // 2
            if (py, px) != (want_pad, want_pad):
                raise ValueError(f"unexpected padding {(py, px)} for stride {sy}")
        elif tag.startswith("affine"):
            # One params tensor holds gamma then beta; the aliases after it carry no data.
            params = r.tensor().reshape(-1)
            half = params.size // 2
            affines.append((params[:half], params[half:]))
        else:
            n_out, n_in = r.int(), r.int()
            params = r.tensor().reshape(-1)
            # dlib stores the fc weights as an (inputs [+1 bias row]) x outputs matrix.
            fc = params[: n_in * n_out].reshape(n_in, n_out).T.copy()
    if len(convs) != 1 + 2 * len(_BLOCKS) or len(affines) != len(convs) or fc is None:
        raise ValueError(f"found {len(convs)} conv, {len(affines)} affine layers, fc={fc is not None}; expected 29/29/1")

    model = DlibResNet()
    sd = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    names = ["conv0"] + [f"blocks.{i}.conv{j}" for i in range(len(_BLOCKS)) for j in (1, 2)]
    anames = ["aff0"] + [f"blocks.{i}.aff{j}" for i in range(len(_BLOCKS)) for j in (1, 2)]
    for name, (w, b), aname, (g, be) in zip(names, convs, anames, affines):
        out[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        out[f"{name}.bias"] = torch.from_numpy(b.copy())
        out[f"{aname}.weight"] = torch.from_numpy(g.copy())
        out[f"{aname}.bias"] = torch.from_numpy(be.copy())
    out["fc.weight"] = torch.from_numpy(fc)
    for k, v in out.items():
        if k not in sd or tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: shape {tuple(v.shape)} does not fit the architecture ({tuple(sd[k].shape) if k in sd else 'missing'})")
    return out
