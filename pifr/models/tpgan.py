"""TP-GAN (Huang, Zhang, Li, He; ICCV 2017, "Beyond Face Rotation: Global and Local Perception
GAN for Photorealistic and Identity Preserving Frontal View Synthesis") in PyTorch.

Pure networks, no I/O. Shapes follow the paper and the facts in the authors' code:

* :class:`Generator` — a global pathway (encoder–decoder on the 128×128 aligned face and its
  mirror, a 256-d maxout identity feature plus 100-d noise, outputs at 32, 64 and 128 px) and four
  local pathways (left eye 40×40, right eye 40×40, nose 32×40, mouth 32×48, small U-Nets) whose
  feature maps and RGB patches are pasted at the frontal template positions, fused by element-wise
  max and fed into the 128 px stage of the decoder.
* :class:`Discriminator` — the patch discriminator (4×4 grid of real/fake logits).
* :class:`BEGANDiscriminator` — an auto-encoder discriminator for the boundary-equilibrium
  objective (Berthelot et al. 2017), selectable in training.

``width`` scales every channel count (1.0 = the paper's configuration, ≈157 M generator
parameters); it is recorded in :attr:`Generator.config` so a smaller model is never silent.
``skips`` (default 128, the paper) is the largest resolution at which the decoder is given the
encoder's feature maps and the input image itself; below the paper's value it is a departure
from TP-GAN (see :class:`TPGANConfig`).
Images are ``(B, 3, H, W)`` in [-1, 1]; landmarks ``(B, 5, 2)`` in pixels of the 128 crop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Local patch sizes (H, W) and the frontal-template centres (row, col) where outputs are pasted.
PATCHES: Tuple[Tuple[str, Tuple[int, int], Tuple[float, float]], ...] = (
    ("left_eye", (40, 40), (41.0, 44.0)),
    ("right_eye", (40, 40), (41.0, 86.0)),
    ("nose", (32, 40), (65.0, 64.0)),
    ("mouth", (32, 48), (89.0, 65.0)),
)
NOISE_DIM = 100
ID_DIM = 256
#: Allowed values of :attr:`TPGANConfig.skips`.
SKIP_SIZES = (0, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class TPGANConfig:
    width: float = 1.0
    noise_dim: int = NOISE_DIM
    id_classes: int = 0  # > 0 adds the encoder's identity-classification head
    local: bool = True
    # Largest resolution (px) at which the decoder receives the encoder's skip features and the
    # downsampled input image: 128 = the paper (all of 8…128). Lower values are NOT the paper: with
    # 8 only the 8×8 features pass, with 0 the face must pass through the 256-d code alone. Real
    # profiles come without pixel-aligned frontal targets, and the full skips let the generator
    # satisfy the identity terms by copying the profile (even with the decoder frozen, the
    # encoders route the copy through the skips); a narrower path makes a copy expensive.
    skips: int = 128
    # "frontalize" (the paper): input = face + its mirror, local outputs pasted at the frontal
    # template. "refine" (a rotate-and-render refiner): input = a render at the target pose + its
    # mask + ``cond_channels − 1`` landmark heatmaps, no mirror (the output keeps the input's pose),
    # local patches cut and pasted back at the target pose's own landmarks.
    mode: str = "frontalize"
    cond_channels: int = 0

    def __post_init__(self) -> None:
        if self.skips not in SKIP_SIZES:
            raise ValueError(f"skips must be one of {SKIP_SIZES}, got {self.skips}")
        if self.mode not in ("frontalize", "refine"):
            raise ValueError(f"mode must be 'frontalize' or 'refine', got {self.mode!r}")
        if (self.mode == "refine") != (self.cond_channels > 0):
            raise ValueError("cond_channels > 0 goes with mode='refine' (mask + landmark heatmaps) and only with it")


def _c(n: int, width: float) -> int:
    return max(4, int(round(n * width)))


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ResBlock(nn.Module):
    """conv-BN-leakyReLU-conv-BN + skip, leakyReLU after the sum (the paper's residual block)."""

    def __init__(self, c: int, k: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, k, 1, k // 2, bias=False), nn.BatchNorm2d(c), _act(),
            nn.Conv2d(c, c, k, 1, k // 2, bias=False), nn.BatchNorm2d(c),
        )
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def _conv(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), _act())


def _deconv(cin: int, cout: int) -> nn.Sequential:
    """×2 upsampling: transposed conv 4×4/2 (exact doubling), BN, leakyReLU."""
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), _act())


def _to_rgb(cin: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 3, 3, 1, 1), nn.Tanh())


class Encoder(nn.Module):
    """128² face+mirror (6 ch) → skips at 128, 64, 32, 16, 8 px and a 256-d maxout identity feature."""

    def __init__(self, width: float, in_channels: int = 6) -> None:
        super().__init__()
        c64, c128, c256, c512 = (_c(n, width) for n in (64, 128, 256, 512))
        self.c512 = c512
        self.s128 = nn.Sequential(_conv(in_channels, c64, 7, 1), ResBlock(c64, 7))
        self.s64 = nn.Sequential(_conv(c64, c64, 5, 2), ResBlock(c64, 5))
        self.s32 = nn.Sequential(_conv(c64, c128, 3, 2), ResBlock(c128))
        self.s16 = nn.Sequential(_conv(c128, c256, 3, 2), ResBlock(c256))
        self.s8 = nn.Sequential(_conv(c256, c512, 3, 2), *[ResBlock(c512) for _ in range(4)])
        self.fc = nn.Linear(8 * 8 * c512, 2 * ID_DIM)
        self.channels = {128: c64, 64: c64, 32: c128, 16: c256, 8: c512}

    def forward(self, x: torch.Tensor) -> Tuple[Dict[int, torch.Tensor], torch.Tensor]:
        skips = {}
        for size in (128, 64, 32, 16, 8):
            x = getattr(self, f"s{size}")(x)
            skips[size] = x
        a, b = self.fc(x.flatten(1)).chunk(2, dim=1)
        return skips, torch.maximum(a, b)  # maxout


class LocalPathway(nn.Module):
    """A small U-Net on one facial patch: returns its 64-channel feature map and a tanh RGB patch."""

    def __init__(self, width: float, in_channels: int = 3) -> None:
        super().__init__()
        c64, c128, c256, c512 = (_c(n, width) for n in (64, 128, 256, 512))
        self.e1 = nn.Sequential(_conv(in_channels, c64, 3, 1), ResBlock(c64))
        self.e2 = nn.Sequential(_conv(c64, c128, 3, 2), ResBlock(c128))
        self.e3 = nn.Sequential(_conv(c128, c256, 3, 2), ResBlock(c256))
        self.e4 = nn.Sequential(_conv(c256, c512, 3, 2), ResBlock(c512), ResBlock(c512))
        self.d3 = _deconv(c512, c256)
        self.r3 = nn.Sequential(_conv(2 * c256, c256, 3, 1), ResBlock(c256))
        self.d2 = _deconv(c256, c128)
        self.r2 = nn.Sequential(_conv(2 * c128, c128, 3, 1), ResBlock(c128))
        self.d1 = _deconv(c128, c64)
        self.r1 = _conv(2 * c64, c64, 3, 1)
        self.rgb = _to_rgb(c64)
        self.out_channels = c64

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        e4 = self.e4(e3)
        y = self.r3(torch.cat([self.d3(e4), e3], 1))
        y = self.r2(torch.cat([self.d2(y), e2], 1))
        y = self.r1(torch.cat([self.d1(y), e1], 1))
        return y, self.rgb(y)


def patch_centres(landmarks: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``(B, 2)`` ``(x, y)`` centre of each patch: eyes at the eye centres, the nose at its tip, the
    mouth at the mouth-corner midpoint; ``landmarks`` ``(B, 5, 2)`` crop pixels."""
    return {"left_eye": landmarks[:, 0], "right_eye": landmarks[:, 1], "nose": landmarks[:, 2],
            "mouth": landmarks[:, 3:5].mean(1)}


def patch_origins(landmarks: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``(B, 2)`` integer ``(x, y)`` pixel of each patch's top-left corner when it is cut at the
    landmarks on the pixel grid (so that pasting it back is exact)."""
    return {name: torch.round(patch_centres(landmarks)[name] - landmarks.new_tensor([(pw - 1) / 2, (ph - 1) / 2]))
            for name, (ph, pw), _ in PATCHES}


def crop_patches(img: torch.Tensor, landmarks: torch.Tensor, on_grid: bool = False) -> Dict[str, torch.Tensor]:
    """Bilinear crops of the four patches around the landmarks (:func:`patch_centres`);
    out-of-image pixels read as -1 (black). ``on_grid``: cut at :func:`patch_origins` (whole pixels).

    Args:
        img: ``(B, C, 128, 128)`` in [-1, 1]. landmarks: ``(B, 5, 2)`` ``(x, y)`` in crop pixels.
    """
    b, _, h, w = img.shape
    centres = patch_centres(landmarks)
    if on_grid:
        centres = {k: o + landmarks.new_tensor([(pw - 1) / 2, (ph - 1) / 2])
                   for (k, o), (_, (ph, pw), _) in zip(patch_origins(landmarks).items(), PATCHES)}
    out = {}
    for name, (ph, pw), _ in PATCHES:
        c = centres[name]
        ys = torch.arange(ph, device=img.device, dtype=img.dtype) - (ph - 1) / 2
        xs = torch.arange(pw, device=img.device, dtype=img.dtype) - (pw - 1) / 2
        gy = c[:, 1, None, None] + ys[None, :, None]
        gx = c[:, 0, None, None] + xs[None, None, :]
        grid = torch.stack([(gx.expand(b, ph, pw) + 0.5) / w * 2 - 1, (gy.expand(b, ph, pw) + 0.5) / h * 2 - 1], -1)
        out[name] = F.grid_sample(img + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    return out


def paste_max(maps: Dict[str, torch.Tensor], size: int = 128) -> torch.Tensor:
    """Place each patch map at its frontal-template centre on a ``size``² canvas; fuse overlaps by max."""
    canvas: Optional[torch.Tensor] = None
    for name, (ph, pw), (cy, cx) in PATCHES:
        m = maps[name]
        full = torch.full((m.shape[0], m.shape[1], size, size), float("-inf"), device=m.device, dtype=m.dtype)
        top, left = int(round(cy - ph / 2)), int(round(cx - pw / 2))
        full[:, :, top : top + ph, left : left + pw] = m
        canvas = full if canvas is None else torch.maximum(canvas, full)
    assert canvas is not None
    return torch.where(torch.isinf(canvas), torch.zeros_like(canvas), canvas)


def paste_at(maps: Dict[str, torch.Tensor], origins: Dict[str, torch.Tensor], size: int = 128) -> torch.Tensor:
    """Place each patch map with its top-left corner at ``origins[name]`` (``(B, 2)`` whole pixels,
    per sample; parts off the canvas are dropped) on a ``size``² canvas; overlaps fused by max, 0
    where no patch lies. The inverse of ``crop_patches(..., on_grid=True)``."""
    canvas: Optional[torch.Tensor] = None
    for name, (ph, pw), _ in PATCHES:
        m = maps[name]
        b, c = m.shape[:2]
        # One copy to the host per patch, not one per sample: on a GPU each int() of a device
        # tensor would stall the queue.
        o = origins[name].long().cpu().tolist()
        full = m.new_full((b, c, size + 2 * ph, size + 2 * pw), float("-inf"))
        for i in range(b):  # whole-pixel placement, padded by a patch each side so none falls off
            x, y = min(max(o[i][0], -pw), size) + pw, min(max(o[i][1], -ph), size) + ph
            full[i, :, y:y + ph, x:x + pw] = m[i]
        full = full[:, :, ph:ph + size, pw:pw + size]
        canvas = full if canvas is None else torch.maximum(canvas, full)
    assert canvas is not None
    return torch.where(torch.isinf(canvas), torch.zeros_like(canvas), canvas)


class Generator(nn.Module):
    """TP-GAN generator.

    ``forward(img, landmarks, noise=None)`` with ``img`` ``(B, 3, 128, 128)`` in [-1, 1] (profiles
    mirrored to one side by the data pipeline) and ``landmarks`` ``(B, 5, 2)`` in crop pixels.
    Returns a dict: ``"img128"``, ``"img64"``, ``"img32"`` (tanh outputs), ``"patches"`` (the four
    local RGB outputs), ``"identity"`` ``(B, 256)`` and, with ``id_classes``, ``"logits"``.
    """

    def __init__(self, width: float = 1.0, noise_dim: int = NOISE_DIM, id_classes: int = 0, local: bool = True,
                 skips: int = 128, mode: str = "frontalize", cond_channels: int = 0) -> None:
        super().__init__()
        self.config = TPGANConfig(width, noise_dim, id_classes, local, skips, mode, cond_channels)
        refine = mode == "refine"
        self.encoder = Encoder(width, 3 + cond_channels if refine else 6)
        # Channels the decoder takes from the encoder at each size (0 where skips are dropped) and
        # whether the input image is injected there (the paper: at 32, 64 and 128 px).
        sk = {s: (self.encoder.channels[s] if s <= skips else 0) for s in (8, 16, 32, 64, 128)}
        inj = {s: (3 if s <= skips else 0) for s in (32, 64, 128)}
        c8, c16, c32, c64 = (_c(n, width) for n in (8, 16, 32, 64))
        c128, c256, c512 = (_c(n, width) for n in (128, 256, 512))
        self.noise_dim = noise_dim
        self.fc = nn.Linear(ID_DIM + noise_dim, 8 * 8 * c64)
        self.c64 = c64
        # "Simple" deconvolution stack from the 8² code straight to 32, 64 and 128 px.
        self.simple32 = nn.Sequential(_deconv(c64, c32), _deconv(c32, c32))
        self.simple64 = _deconv(c32, c16)
        self.simple128 = _deconv(c16, c8)
        # Main decoder path with encoder skips and input injections.
        self.r8 = nn.Sequential(ResBlock(c64 + sk[8]), ResBlock(c64 + sk[8]))
        self.up16 = _deconv(c64 + sk[8], c512)
        self.r16 = nn.Sequential(ResBlock(c512 + sk[16]), ResBlock(c512 + sk[16]))
        self.up32 = _deconv(c512 + sk[16], c256)
        n32 = c256 + sk[32] + inj[32] + c32
        self.r32 = nn.Sequential(ResBlock(n32), ResBlock(n32))
        self.rgb32 = _to_rgb(n32)
        self.up64 = _deconv(n32, c128)
        n64 = c128 + sk[64] + inj[64] + c16 + 3
        self.r64 = nn.Sequential(ResBlock(n64), ResBlock(n64))
        self.rgb64 = _to_rgb(n64)
        self.up128 = _deconv(n64, c64)
        # A refiner's local pathways also see the mask: which pixels of the patch were rendered.
        self.local = nn.ModuleDict({name: LocalPathway(width, 4 if refine else 3) for name, _, _ in PATCHES}) if local else None
        n_local = (self.local["nose"].out_channels + 3) if local else 0
        n128 = c64 + sk[128] + inj[128] + c8 + 3 + n_local
        self.r128 = nn.Sequential(_conv(n128, c64, 5, 1), ResBlock(c64), _conv(c64, c32, 3, 1))
        self.rgb128 = _to_rgb(c32)
        self.id_head = nn.Sequential(nn.Dropout(0.3), nn.Linear(ID_DIM, id_classes)) if id_classes else None

    @classmethod
    def from_config(cls, config: Dict[str, object]) -> "Generator":
        """A generator built from a saved :class:`TPGANConfig` dict (the ``config`` metadata of a
        generator file). Keys it does not know raise ``ValueError``; missing keys take the defaults
        (files written before ``skips`` existed are the paper's full-skip generator)."""
        known = set(TPGANConfig.__dataclass_fields__)
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}")
        cfg = TPGANConfig(**config)  # type: ignore[arg-type]
        return cls(cfg.width, cfg.noise_dim, cfg.id_classes, cfg.local, cfg.skips, cfg.mode, cfg.cond_channels)

    def _skip(self, feats: Dict[int, torch.Tensor], size: int) -> List[torch.Tensor]:
        return [feats[size]] if size <= self.config.skips else []

    def forward(self, img: torch.Tensor, landmarks: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``cond`` ``(B, cond_channels, 128, 128)``: mask then heatmaps (``mode="refine"`` only)."""
        if img.ndim != 4 or img.shape[1:] != (3, 128, 128):
            raise ValueError(f"expected img of shape (B, 3, 128, 128), got {tuple(img.shape)}")
        b = img.shape[0]
        refine = self.config.mode == "refine"
        if refine:
            if cond is None or cond.shape != (b, self.config.cond_channels, 128, 128):
                raise ValueError(f"a refiner needs cond of shape (B, {self.config.cond_channels}, 128, 128), "
                                 f"got {None if cond is None else tuple(cond.shape)}")
            skips, ident = self.encoder(torch.cat([img, cond], 1))
        else:
            skips, ident = self.encoder(torch.cat([img, img.flip(3)], 1))
        if noise is None:
            noise = torch.randn(b, self.noise_dim, device=img.device, dtype=img.dtype) * 0.02
        code = F.leaky_relu(self.fc(torch.cat([ident, noise], 1)), 0.2).view(b, self.c64, 8, 8)
        s32 = self.simple32(code)
        s64 = self.simple64(s32)
        s128 = self.simple128(s64)
        inputs = {128: img}
        for size in (32, 64):
            if size <= self.config.skips:
                inputs[size] = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)

        x = self.up16(self.r8(torch.cat([code, *self._skip(skips, 8)], 1)))
        x = self.up32(self.r16(torch.cat([x, *self._skip(skips, 16)], 1)))
        x = self.r32(torch.cat([x, *self._skip(skips, 32), *self._skip(inputs, 32), s32], 1))
        img32 = self.rgb32(x)
        x = self.up64(x)
        x = self.r64(torch.cat([x, *self._skip(skips, 64), *self._skip(inputs, 64), s64,
                                F.interpolate(img32, scale_factor=2, mode="bilinear", align_corners=False)], 1))
        img64 = self.rgb64(x)
        x = self.up128(x)
        parts = [x, *self._skip(skips, 128), *self._skip(inputs, 128), s128,
                 F.interpolate(img64, scale_factor=2, mode="bilinear", align_corners=False)]
        out: Dict[str, torch.Tensor] = {}
        if self.local is not None:
            if landmarks is None:
                raise ValueError("the local pathways need landmarks (B, 5, 2)")
            crops = crop_patches(torch.cat([img, cond[:, :1] * 2 - 1], 1) if refine else img, landmarks, on_grid=refine)
            feats, rgbs = {}, {}
            for name, net in self.local.items():
                feats[name], rgbs[name] = net(crops[name])
            if refine:
                origins = patch_origins(landmarks)
                parts += [paste_at(feats, origins), paste_at(rgbs, origins)]
            else:
                parts += [paste_max(feats), paste_max(rgbs)]
            out["patches"] = rgbs  # type: ignore[assignment]
        x = self.r128(torch.cat(parts, 1))
        out.update(img128=self.rgb128(x), img64=img64, img32=img32, identity=ident)
        if self.id_head is not None:
            out["logits"] = self.id_head(ident)
        return out

    def decoder_parameters(self) -> List[nn.Parameter]:
        """Every weight that turns features into the image: the identity code's projection, the
        "simple" stacks, the main decoder path and the local pathways' decoders — all but the global
        encoder, the local encoders (``e1``–``e4``) and the identity head."""
        enc = re.compile(r"^(encoder\.|local\.\w+\.e\d\.|id_head\.)")
        return [p for n, p in self.named_parameters() if not enc.match(n)]

    def parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Global and local parameters, for separate optimisers (as in the paper)."""
        local = list(self.local.parameters()) if self.local is not None else []
        ids = {id(p) for p in local}
        return {"global": [p for p in self.parameters() if id(p) not in ids], "local": local}


class Discriminator(nn.Module):
    """PatchGAN: 128² → 4×4 logits. conv/2 64 (no BN) → 128 → 256 → 512 (8²) → res → conv/2 512 (4²) → res → 1×1."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c64, c128, c256, c512 = (_c(n, width) for n in (64, 128, 256, 512))
        self.net = nn.Sequential(
            nn.Conv2d(3, c64, 4, 2, 1), _act(),
            _conv(c64, c128, 3, 2), _conv(c128, c256, 3, 2), _conv(c256, c512, 3, 2),
            ResBlock(c512), _conv(c512, c512, 3, 2), ResBlock(c512),
            nn.Conv2d(c512, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 128, 128)`` in [-1, 1] → ``(B, 1, 4, 4)`` logits."""
        return self.net(x)


class BEGANDiscriminator(nn.Module):
    """Auto-encoder discriminator for BEGAN: ``forward`` returns the reconstruction of its input."""

    def __init__(self, width: float = 1.0, code: int = 128) -> None:
        super().__init__()
        c64, c128, c256 = (_c(n, width) for n in (64, 128, 256))
        self.enc = nn.Sequential(
            nn.Conv2d(3, c64, 3, 2, 1), nn.ELU(), nn.Conv2d(c64, c128, 3, 2, 1), nn.ELU(),
            nn.Conv2d(c128, c256, 3, 2, 1), nn.ELU(), nn.Conv2d(c256, c256, 3, 2, 1), nn.ELU(),
        )
        self.fc_e = nn.Linear(c256 * 64, code)
        self.fc_d = nn.Linear(code, c256 * 64)
        self.c256 = c256
        up = lambda a, b: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, 1, 1), nn.ELU())  # noqa: E731
        self.dec = nn.Sequential(up(c256, c256), up(c256, c128), up(c128, c64), up(c64, c64), nn.Conv2d(c64, 3, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc_e(self.enc(x).flatten(1))
        return self.dec(self.fc_d(z).view(x.shape[0], self.c256, 8, 8))


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
