"""TP-GAN losses (Huang et al., ICCV 2017, eq. 1–8).

L = L_pixel + λ1·L_sym + λ2·L_adv + λ3·L_ip + λ4·L_tv + α·L_ce, paper weights
λ1 = 0.3, λ2 = 1e-3, λ3 = 3e-3, λ4 = 1e-4, α = 1e-3 (:class:`LossWeights`). All losses are
means (the paper's scale), so the weights are the paper's, not the official code's sums.
Images are ``(B, 3, H, W)`` in [-1, 1].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator objective. The first six are the paper's (eq. 8, its values);
    ``id_cos`` is not in the paper (0 there)."""

    pixel: float = 1.0
    sym: float = 0.3
    adv: float = 1e-3
    ip: float = 3e-3
    tv: float = 1e-4
    ce: float = 1e-3
    # Not in the paper (0 = paper): weight of 1 − cosine between the identity network's embeddings
    # of output and target. With identity-level pairs (CFP: target is another photo of the person)
    # the spatial maps of the L1 term describe a different pose and lighting; the embedding is the
    # part that should match, and in the L1 mean it is one level of six with a tiny scale.
    id_cos: float = 0.0

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def pixel_loss(out: Mapping[str, torch.Tensor], target: torch.Tensor,
               target_patches: Optional[Mapping[str, torch.Tensor]] = None,
               sample_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean L1 at 128, 64 and 32 px (target area-downsampled) and on the local patch outputs.

    ``sample_weight`` (B,): each sample's L1 is scaled by it before the batch mean (0 leaves a
    sample out of the pixel term); None = all ones, the paper's loss."""

    def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if sample_weight is None:
            return F.l1_loss(a, b)
        return ((a - b).abs().flatten(1).mean(1) * sample_weight.to(a.dtype)).mean()

    terms = [l1(out["img128"], target)]
    for size in (64, 32):
        terms.append(l1(out[f"img{size}"], F.interpolate(target, size=size, mode="area")))
    if target_patches is not None and "patches" in out:
        for name, p in out["patches"].items():  # type: ignore[union-attr]
            terms.append(l1(p, target_patches[name]))
    return torch.stack(terms).mean()


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(img: torch.Tensor) -> torch.Tensor:
    k = _LAPLACE.to(img).view(1, 1, 3, 3).repeat(img.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), k, groups=img.shape[1])


def symmetry_loss(img: torch.Tensor, space: str = "laplacian") -> torch.Tensor:
    """L1 between the image and its horizontal mirror, in pixel space (``"plain"``) or in Laplacian
    space (``"laplacian"``: the paper's choice, robust to one-sided illumination; the Laplacian is
    mirror-invariant, so a symmetric face gives exactly zero)."""
    if space == "plain":
        return F.l1_loss(img, img.flip(3))
    if space == "laplacian":
        lap = laplacian(img)
        return F.l1_loss(lap, lap.flip(3))
    raise ValueError(f"space must be 'plain' or 'laplacian', got {space!r}")


def tv_loss(img: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


def d_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 0.9) -> torch.Tensor:
    """Discriminator loss: sigmoid cross-entropy with one-sided label smoothing (real target 0.9)."""
    return F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label)) + \
        F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def g_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial loss: make the discriminator call its output real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def identity_loss(features: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], fake: torch.Tensor,
                  real: torch.Tensor) -> torch.Tensor:
    """Mean over feature levels of the L1 distance between a frozen face network's features of the
    generated and the true frontal (the paper uses Light-CNN's last pooling maps and feature vector)."""
    return identity_terms(features, fake, real)[0]


def identity_terms(features: Callable[..., Mapping[str, torch.Tensor]], fake: torch.Tensor,
                   real: torch.Tensor, view: Optional[RandomView] = None) -> "tuple[torch.Tensor, torch.Tensor]":
    """``(l1, cos)``: the paper's mean L1 over feature levels and the mean ``1 − cosine`` of the
    embeddings, from one pass of the frozen network over each image — through ``view`` when given
    (``features(img, view)``, the same view for both)."""
    feats = features if view is None else (lambda t: features(t, view))
    with torch.no_grad():
        fr = feats(real)
    ff = feats(fake)
    l1 = torch.stack([F.l1_loss(ff[k].float(), fr[k].float()) for k in fr]).mean()
    cos = 1 - F.cosine_similarity(ff["embedding"].float(), fr["embedding"].float(), dim=1).mean()
    return l1, cos


class BEGANBalance:
    """Boundary-equilibrium state (Berthelot et al. 2017): k_{t+1} = k_t + λ_k (γ L(x) − L(G(z)))."""

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3) -> None:
        self.gamma, self.lambda_k, self.k = gamma, lambda_k, 0.0

    def d_loss(self, recon_err_real: torch.Tensor, recon_err_fake: torch.Tensor) -> torch.Tensor:
        return recon_err_real - self.k * recon_err_fake

    def update(self, recon_err_real: float, recon_err_fake: float) -> float:
        """Advance k and return the convergence measure M = L(x) + |γ L(x) − L(G(z))|."""
        self.k = min(max(self.k + self.lambda_k * (self.gamma * recon_err_real - recon_err_fake), 0.0), 1.0)
        return recon_err_real + abs(self.gamma * recon_err_real - recon_err_fake)


class IdentityFeatures(nn.Module):
    """A frozen face network seen from TP-GAN's 128 crop: warps the [-1, 1] TP-GAN crop onto the
    network's own alignment template (a fixed similarity between the two frontal templates),
    rescales to its input range and returns its feature dict (intermediate maps + ``embedding``).

    ``net`` must take ``(B, 3, S, S)`` RGB in [0, 255] and have a ``feature_maps`` method returning
    a dict of tensors with an ``"embedding"`` entry — as every pifr embedder network does.
    """

    def __init__(self, net: nn.Module, src_template, dst_template) -> None:
        super().__init__()
        import numpy as np

        from ..alignment import similarity_transform

        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.size = dst_template.size
        m = similarity_transform(dst_template.array, src_template.array)  # dst px → src px
        # affine_grid works in normalised coordinates [-1, 1] (align_corners=False).
        s_in, s_out = src_template.size, dst_template.size
        to_norm = np.array([[2 / s_in, 0, 1 / s_in - 1], [0, 2 / s_in, 1 / s_in - 1], [0, 0, 1]])
        from_norm = np.array([[s_out / 2, 0, s_out / 2 - 0.5], [0, s_out / 2, s_out / 2 - 0.5], [0, 0, 1]])
        theta = to_norm @ np.vstack([m, [0, 0, 1]]) @ from_norm
        self.register_buffer("theta", torch.tensor(theta[:2], dtype=torch.float32)[None])

    def forward(self, img: torch.Tensor, view: Optional["RandomView"] = None) -> Dict[str, torch.Tensor]:
        """``img`` ``(B, 3, 128, 128)`` in [-1, 1]; ``view``: a per-sample random view (training only)."""
        theta = self.theta.expand(img.shape[0], 2, 3)
        if view is not None:
            # The view acts in the network's own crop: output coords → jittered coords → TP-GAN crop.
            theta = theta @ torch.cat([view.affine, view.affine.new_tensor([0.0, 0.0, 1.0]).expand(len(img), 1, 3)], 1)
        grid = F.affine_grid(theta, [img.shape[0], 3, self.size, self.size], align_corners=False)
        x = F.grid_sample((img + 1) * 127.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if view is not None:
            x = (x * view.gain[:, :, None, None]).clamp(0, 255)
        return self.net.feature_maps(x)


class IdentityEnsemble(nn.Module):
    """Several frozen identity networks as one teacher (``identity_net="dlib_resnet+mobilefacenet"``).

    Returns every member's maps under ``"<name>.<map>"`` (its raw embedding included) and, as
    ``"embedding"``, the members' unit embeddings concatenated and scaled by ``1/√n``: a unit
    vector whose cosine to another is the mean of the members' cosines, so the cosine term and
    validation's rank-1 need no change.

    Why: a generator taught by one network learns marks that network reads and others do not
    (taught by MobileFaceNet, its gain never reached dlib or a second MobileFaceNet); marks two
    unlike networks must both read are more likely the face."""

    def __init__(self, members: Dict[str, IdentityFeatures]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two identity networks")
        self.members = nn.ModuleDict(members)

    def forward(self, img: torch.Tensor, view: Optional["RandomView"] = None) -> Dict[str, torch.Tensor]:
        """``img`` ``(B, 3, 128, 128)`` in [-1, 1]; ``view`` as :meth:`IdentityFeatures.forward` (shared by all)."""
        out: Dict[str, torch.Tensor] = {}
        embs = []
        for name, net in self.members.items():
            f = net(img, view)
            out.update({f"{name}.{k}": v for k, v in f.items()})
            embs.append(F.normalize(f["embedding"].float(), dim=1))
        out["embedding"] = torch.cat(embs, 1) / math.sqrt(len(embs))
        return out


#: Ranges of :class:`RandomView` at amount 1: shift (fraction of the half-crop), relative
#: scale, rotation (radians), per-channel colour gain.
VIEW_SHIFT, VIEW_SCALE, VIEW_ROTATION, VIEW_GAIN = 0.08, 0.06, math.radians(6.0), 0.10


@dataclass(frozen=True)
class RandomView:
    """One small random similarity and colour gain per sample, through which the identity
    network sees an image (``IdentityFeatures(img, view)``). One draw serves every image of a
    step, so output, target and input of a pair are seen the same way and the feature-map L1
    still compares like with like.

    Why: a generator trained against one fixed view of one frozen network can satisfy it with
    marks tied to that view (seen through random views, one such generator's MobileFaceNet
    rank-1 fell 0.42 → 0.295, the raw profiles' only 0.555 → 0.53); marks that must survive
    random shifts, scales, turns and colour changes are more likely the face itself — the
    expectation-over-transformation argument of Athalye et al., "Synthesizing Robust Adversarial
    Examples" (ICML 2018), used the other way round.
    ``affine`` ``(B, 2, 3)`` in normalised crop coordinates; ``gain`` ``(B, 3)``."""

    affine: torch.Tensor
    gain: torch.Tensor

    @classmethod
    def draw(cls, b: int, amount: float, generator: torch.Generator, device: torch.device) -> "RandomView":
        """``b`` views; ``amount`` scales the ranges (VIEW_*), 1 = as documented there."""
        u = (torch.rand(b, 7, generator=generator) * 2 - 1) * amount
        scale = 1 + VIEW_SCALE * u[:, 0]
        ang = VIEW_ROTATION * u[:, 1]
        cos, sin = scale * torch.cos(ang), scale * torch.sin(ang)
        affine = torch.stack([torch.stack([cos, -sin, VIEW_SHIFT * u[:, 2]], 1),
                              torch.stack([sin, cos, VIEW_SHIFT * u[:, 3]], 1)], 1)
        return cls(affine.to(device), (1 + VIEW_GAIN * u[:, 4:7]).to(device))


@dataclass
class LossTerms:
    total: torch.Tensor
    # Unweighted terms as detached 0-d tensors: reading them as numbers waits for the GPU, so the
    # trainer does that only on the steps it logs.
    terms: Dict[str, torch.Tensor]


def generator_loss(out: Mapping[str, torch.Tensor], target: torch.Tensor, *, weights: LossWeights = LossWeights(),
                   target_patches: Optional[Mapping[str, torch.Tensor]] = None,
                   fake_logits: Optional[torch.Tensor] = None, began_fake_err: Optional[torch.Tensor] = None,
                   id_features: Optional[Callable] = None, id_labels: Optional[torch.Tensor] = None,
                   sym_space: str = "laplacian", pixel_weight: Optional[torch.Tensor] = None,
                   id_view: Optional[RandomView] = None) -> LossTerms:
    """The whole weighted TP-GAN generator objective (:class:`LossWeights`); terms whose inputs are
    absent are skipped. ``fake_logits``: the patch discriminator's logits of ``out["img128"]``, or
    ``began_fake_err``: the BEGAN discriminator's reconstruction error of it; ``id_features``: a
    frozen identity network (:class:`IdentityFeatures` or :class:`IdentityEnsemble`);
    ``id_labels`` (B,): the batch's identities, for ``ce`` when the generator has an identity head
    (``"logits"`` in ``out``); ``pixel_weight`` (B,): per-sample scale of the pixel term (see
    :func:`pixel_loss`); ``id_view``: the identity network's random view (:class:`RandomView`)
    for this step, or None for its fixed one."""
    terms: Dict[str, torch.Tensor] = {"pixel": pixel_loss(out, target, target_patches, pixel_weight),
                                      "sym": symmetry_loss(out["img128"], sym_space),
                                      "tv": tv_loss(out["img128"])}
    if fake_logits is not None:
        terms["adv"] = g_adversarial_loss(fake_logits)
    elif began_fake_err is not None:
        terms["adv"] = began_fake_err
    if id_features is not None and (weights.ip or weights.id_cos):
        terms["ip"], id_cos = identity_terms(id_features, out["img128"], target, id_view)
        if weights.id_cos:
            terms["id_cos"] = id_cos
    if id_labels is not None and "logits" in out:
        terms["ce"] = F.cross_entropy(out["logits"], id_labels)
    w = weights.to_dict()
    total = sum(w[k] * v for k, v in terms.items())
    return LossTerms(total, {k: v.detach() for k, v in terms.items()})
