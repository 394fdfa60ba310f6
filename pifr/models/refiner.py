"""Render refiners: networks that turn a 3D render of a face (:mod:`pifr.rotation`) into a photo.

Both take the same inputs, in the 128×128 TP-GAN crop at the rendered pose:

* ``render`` ``(B, 3, 128, 128)`` in [-1, 1] — black outside the face;
* ``mask`` ``(B, 1, 128, 128)`` in {0, 1} — the pixels the render covers;
* ``landmarks`` ``(B, 68, 2)`` — the rendered pose's 68 landmarks in crop pixels, given to the
  network as one Gaussian heatmap each (the pose guidance of CAPG-GAN, Hu et al., CVPR 2018).

and return ``{"img128": (B, 3, 128, 128) in [-1, 1], ...}``. Two architectures:

* ``"tpgan"`` — the TP-GAN generator (:class:`pifr.models.tpgan.Generator` in ``mode="refine"``):
  global encoder–decoder plus four local pathways cut and pasted back at the target landmarks;
  also returns ``img64``, ``img32`` and ``patches`` for its multi-scale and local terms.
* ``"spade"`` — Rotate-and-Render's generator shape (Zhou et al., CVPR 2020): a down-sampling
  encoder, residual blocks whose normalisation is modulated by the condition (SPADE, Park et al.,
  CVPR 2019), up-sampling SPADE residual blocks.

:func:`build_refiner` makes either from a :class:`RefinerConfig`; the config travels in the
weights file's metadata so a file always rebuilds the network it was trained as.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tpgan import Generator, _c

#: Landmarks given to the network (the 68 of iBUG/300W).
N_LANDMARKS = 68
ARCHS = ("tpgan", "spade")
#: Facial parts of the 68 points (iBUG order): with ``heatmaps="parts"`` each part is one map (the
#: max of its points' Gaussians) — 9 input channels instead of 68 for the same curves; the first
#: full-resolution convolution is the largest cost of a small refiner on a CPU.
PARTS = ((0, 17), (17, 22), (22, 27), (27, 31), (31, 36), (36, 42), (42, 48), (48, 60), (60, 68))
HEATMAP_KINDS = ("parts", "points")


@dataclass(frozen=True)
class RefinerConfig:
    """``arch``: ``"tpgan"`` or ``"spade"``; ``width`` scales channel counts (TP-GAN: 1.0 = the
    paper's; SPADE: 1.0 = 64 base channels); ``sigma``: heatmap Gaussian s.d. in crop pixels;
    ``heatmaps``: ``"points"`` (68 maps, CAPG-GAN) or ``"parts"`` (9, see :data:`PARTS`);
    ``residual``: the output is the render (on its mask) plus twice the network's tanh output,
    whose last convolution starts at zero — the refiner starts as the identity on the face and
    learns corrections and the surround, instead of first having to learn to copy the render
    (it matters on a CPU budget of a few thousand steps)."""

    arch: str = "tpgan"
    width: float = 0.125
    sigma: float = 2.0
    heatmaps: str = "parts"
    residual: bool = True

    @property
    def heatmap_channels(self) -> int:
        return N_LANDMARKS if self.heatmaps == "points" else len(PARTS)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.heatmaps not in HEATMAP_KINDS:
            raise ValueError(f"heatmaps must be one of {HEATMAP_KINDS}, got {self.heatmaps!r}")
        if not (0 < self.width <= 4) or not (0 < self.sigma <= 16):
            raise ValueError(f"width must be in (0, 4] and sigma in (0, 16], got {self.width}, {self.sigma}")

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> "RefinerConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown refiner config keys {sorted(unknown)}")
        return cls(**d)  # type: ignore[arg-type]


def heatmaps(landmarks: torch.Tensor, size: int = 128, sigma: float = 2.0) -> torch.Tensor:
    """``(B, 68, 2)`` crop pixels → ``(B, 68, size, size)`` Gaussians with peak 1 at each point
    (pixel centres at integer + 0.5 as everywhere in pifr); points off the crop give ~0 maps."""
    ax = torch.arange(size, device=landmarks.device, dtype=landmarks.dtype) + 0.5
    gx = torch.exp(-((ax[None, None, :] - landmarks[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, 68, S)
    gy = torch.exp(-((ax[None, None, :] - landmarks[..., 1:2]) ** 2) / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def part_heatmaps(landmarks: torch.Tensor, size: int = 128, sigma: float = 2.0) -> torch.Tensor:
    """``(B, 68, 2)`` → ``(B, 9, size, size)``: per facial part (:data:`PARTS`) the max of its points' Gaussians."""
    h = heatmaps(landmarks, size, sigma)
    return torch.stack([h[:, a:b].amax(1) for a, b in PARTS], 1)


def landmarks5(landmarks: torch.Tensor) -> torch.Tensor:
    """``(B, 68, 2)`` → pifr's 5 points ``(B, 5, 2)``: eye centres, nose tip, mouth corners."""
    return torch.stack([landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1), landmarks[:, 30],
                        landmarks[:, 48], landmarks[:, 54]], 1)


def _resized(cond: torch.Tensor, size: int) -> torch.Tensor:
    if cond.shape[-1] == size:  # bilinear at the same size samples pixel centres: the map itself
        return cond
    return F.interpolate(cond, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class SPADE(nn.Module):
    """Parameter-free BatchNorm whose scale and shift per pixel come from the condition map."""

    def __init__(self, c: int, cond: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond, hidden, 3, 1, 1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, c, 3, 1, 1)
        self.beta = nn.Conv2d(hidden, c, 3, 1, 1)

    def forward(self, x: torch.Tensor, cond: "torch.Tensor | Dict[int, torch.Tensor]") -> torch.Tensor:
        """``cond``: the condition map, or ``{size: map resized to size}`` (shared by a forward pass)."""
        c = cond[x.shape[-1]] if isinstance(cond, dict) else _resized(cond, x.shape[-1])
        h = self.shared(c)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEBlock(nn.Module):
    """SPADE residual block (Park et al. 2019): two SPADE-ReLU-conv steps, learned shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, cond: int, hidden: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.n0, self.c0 = SPADE(cin, cond, hidden), nn.Conv2d(cin, mid, 3, 1, 1)
        self.n1, self.c1 = SPADE(mid, cond, hidden), nn.Conv2d(mid, cout, 3, 1, 1)
        self.short = None if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.sn = None if cin == cout else SPADE(cin, cond, hidden)

    def forward(self, x: torch.Tensor, cond: "torch.Tensor | Dict[int, torch.Tensor]") -> torch.Tensor:
        s = x if self.short is None else self.short(self.sn(x, cond))
        y = self.c0(F.leaky_relu(self.n0(x, cond), 0.2))
        y = self.c1(F.leaky_relu(self.n1(y, cond), 0.2))
        return s + y


class SPADEGenerator(nn.Module):
    """Encoder 128→16 px (stride-2 convs), SPADE residual blocks at 16 px, SPADE up-blocks back to
    128 px, tanh RGB. The condition (render, mask, heatmaps) modulates every block."""

    def __init__(self, width: float, cond: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = (_c(n, width) for n in (64, 128, 256, 256))
        hidden = _c(64, width)
        act = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.enc = nn.Sequential(
            nn.Conv2d(cond, c1, 7, 1, 3), nn.InstanceNorm2d(c1, affine=True), act(),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.InstanceNorm2d(c2, affine=True), act(),   # 64
            nn.Conv2d(c2, c3, 4, 2, 1), nn.InstanceNorm2d(c3, affine=True), act(),   # 32
            nn.Conv2d(c3, c4, 4, 2, 1), nn.InstanceNorm2d(c4, affine=True), act(),   # 16
        )
        self.mid = nn.ModuleList([SPADEBlock(c4, c4, cond, hidden) for _ in range(4)])
        self.up = nn.ModuleList([SPADEBlock(c4, c3, cond, hidden), SPADEBlock(c3, c2, cond, hidden),
                                 SPADEBlock(c2, c1, cond, hidden)])
        self.rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(c1, 3, 3, 1, 1), nn.Tanh())

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        x = self.enc(cond)
        # The condition resized once per resolution, not once per normalisation layer.
        sizes = {s: _resized(cond, s) for s in (x.shape[-1] * 2**k for k in range(len(self.up) + 1))}
        for blk in self.mid:
            x = blk(x, sizes)
        for blk in self.up:
            x = blk(F.interpolate(x, scale_factor=2, mode="nearest"), sizes)
        return self.rgb(x)


class Refiner(nn.Module):
    """One interface over both architectures: ``forward(render, mask, landmarks)`` → dict with
    ``"img128"`` (see the module docstring for shapes)."""

    def __init__(self, config: RefinerConfig = RefinerConfig()) -> None:
        super().__init__()
        self.config = config
        cond = 1 + config.heatmap_channels
        if config.arch == "tpgan":
            self.net: nn.Module = Generator(width=config.width, noise_dim=0, mode="refine", cond_channels=cond)
        else:
            self.net = SPADEGenerator(config.width, 3 + cond)
        if config.residual:
            last = self.net.rgb128[0] if config.arch == "tpgan" else self.net.rgb[1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, render: torch.Tensor, mask: torch.Tensor, landmarks: torch.Tensor) -> Dict[str, torch.Tensor]:
        b = render.shape[0]
        if render.shape[1:] != (3, 128, 128) or mask.shape != (b, 1, 128, 128) or landmarks.shape != (b, N_LANDMARKS, 2):
            raise ValueError(f"expected render (B, 3, 128, 128), mask (B, 1, 128, 128), landmarks (B, 68, 2); got "
                             f"{tuple(render.shape)}, {tuple(mask.shape)}, {tuple(landmarks.shape)}")
        maps = heatmaps if self.config.heatmaps == "points" else part_heatmaps
        cond = torch.cat([mask.to(render.dtype), maps(landmarks.to(render.dtype), 128, self.config.sigma)], 1)
        if self.config.arch == "tpgan":
            out = self.net(render, landmarks5(landmarks), cond=cond)
            out.pop("identity", None)
        else:
            out = {"img128": self.net(torch.cat([render, cond], 1))}
        if self.config.residual:
            # Unclamped while training (a clamp would stop the gradient of saturated pixels).
            out["img128"] = render * mask + 2 * out["img128"]
            if not self.training:
                out["img128"] = out["img128"].clamp(-1, 1)
        return out


def build_refiner(config: RefinerConfig = RefinerConfig()) -> Refiner:
    return Refiner(config)


#: ``format`` metadata of a refiner weights file.
FILE_FORMAT = "pifr-refiner"


def save_refiner(net: Refiner, path, meta: Mapping[str, object] = (), half: bool = True) -> None:
    """Write ``net`` as safetensors (fp16 by default; BatchNorm counters stay int64) with its
    config and ``meta`` (JSON-able: training data, steps, figures) in the metadata."""
    import json

    from safetensors.torch import save_file

    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in net.state_dict().items()}
    md = {"format": FILE_FORMAT, "config": json.dumps(net.config.to_dict()), "meta": json.dumps(dict(meta))}
    save_file(sd, str(path), metadata=md)


def read_refiner(path) -> "tuple[Refiner, Dict[str, object]]":
    """``(Refiner in eval mode, float32, on CPU; its meta dict)`` from a :func:`save_refiner` file.

    Raises:
        ValueError: not a refiner file, an unknown config, or tensors that do not fit the config.
    """
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        if md.get("format") != FILE_FORMAT:
            raise ValueError(f"{path}: not a refiner file (format {md.get('format')!r}, expected {FILE_FORMAT!r})")
        sd = {k: f.get_tensor(k) for k in f.keys()}
    net = Refiner(RefinerConfig.from_dict(json.loads(md["config"])))
    own = net.state_dict()
    bad = sorted(set(own) ^ set(sd)) + [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if bad:
        raise ValueError(f"{path}: tensors do not fit its config ({len(bad)} keys, e.g. {bad[:3]})")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})
    return net.eval(), json.loads(md.get("meta", "{}"))
